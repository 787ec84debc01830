"""Apply a computed diff: the one door through which dunning state changes."""

from datetime import datetime

from django.db import transaction

from billing_events.models import Account
from core.row_sql import RowInsert
from dunning import outbox_items
from dunning.apply_case import apply_case
from dunning.compute import Desired
from dunning.diff import Change, Outcome
from dunning.models import (
    AccountStanding,
    BadDebtEpisode,
    Decision,
    DunningCase,
    OutboxItem,
    ShadowDecision,
)
from dunning.notifications.records import record_plan
from dunning.outbox_items import add_item, supersede_waiting_retry
from dunning.outcomes import publish_outcome
from dunning.policy import Policy
from dunning.snapshot import Snapshot
from dunning.triggers import Trigger
from entitlements.services import set_restrictions

# Every recompute that changes anything writes one.
DECISION_INSERT = RowInsert("dunning_decision_insert", Decision)


def apply(
    *,
    account: Account,
    snapshot: Snapshot,
    desired: Desired,
    changes: tuple[Change, ...],
    trigger: Trigger,
    now: datetime,
    policy: Policy,
) -> Outcome:
    stores = {change.store for change in changes}
    # A new case gets its decision once it exists; an existing one has it from the insert.
    existing_case = desired.case.case_pk if desired.case is not None else None
    decision = Decision(
        account=account,
        case_id=existing_case,
        trigger=trigger.kind,
        actor=trigger.source,
        decided_at=now,
        policy_version=policy.version,
        changes=[change.as_dict() for change in changes],
        explanation=[
            {"rule": rule.name, "conclusion": rule.conclusion, "facts": rule.facts}
            for rule in desired.rules
        ],
        summary=desired.summary(),
    )
    DECISION_INSERT.send(decision)
    if desired.case is not None and stores & {"case", "case_invoices"}:
        case = apply_case(account, snapshot, desired, decision, trigger, now, policy)
        if existing_case is None:
            decision.case = case
            decision.save(update_fields=["case"])
    elif existing_case is not None:
        # Only restrictions, standing or side effects changed: still the case's decision.
        DunningCase.objects.filter(pk=existing_case).update(last_decision=decision)

    shadow_change = next((c for c in changes if c.store == "case" and c.field == "shadow"), None)
    if shadow_change is not None and desired.case.shadow:
        ShadowDecision.objects.create(
            account=account,
            case_id=decision.case_id,
            decision=decision,
            at=now,
            stage=snapshot.rollout_stage,
            level=desired.case.level.value,
            would_apply=desired.case.shadow,
            summary=decision.summary,
        )
    if "restrictions" in stores:
        set_restrictions(
            account_id=account.pk,
            desired=desired.restrictions,
            reason=desired.summary()[:255],
            now=now,
        )
    outbox_ids = []
    if "standing" in stores:
        AccountStanding.objects.update_or_create(
            account=account, defaults={"requested": desired.standing, "requested_at": now}
        )
        outbox_ids.append(
            _request(
                OutboxItem.Kind.ACCOUNT_STANDING,
                f"standing:{account.pk}:{decision.pk}",
                {"standing": desired.standing, "stripe_customer_id": account.stripe_customer_id},
                decision=decision,
                due=now,
                now=now,
            )
        )
    if "retry" in stores:
        outbox_ids += _reschedule_retry(account, desired, decision, now)
    if "bad_debt" in stores:
        _move_bad_debt(account, snapshot, desired, decision, now)
    if "subscriptions" in stores:
        outbox_ids += _request_cancellation(account, changes, decision, now)
    if "upgrades" in stores:
        outbox_ids += _request_revert(account, snapshot, desired, changes, decision, now)
    if "lookups" in stores:
        outbox_ids += _request_lookups(account, changes, decision, now)
    if "notices" in stores:
        [change] = [c for c in changes if c.store == "notices"]
        outbox_ids += record_plan(desired=desired, planned=change.after, decision=decision, now=now)
    outbox_ids += publish_outcome(
        account=account, desired=desired, changes=changes, decision=decision, now=now
    )
    if outbox_ids:
        transaction.on_commit(outbox_items.kick_dispatcher)
    return Outcome(
        account_id=account.pk,
        changes=changes,
        decision_id=decision.pk,
        summary=decision.summary,
        outbox_ids=tuple(outbox_ids),
    )


def _reschedule_retry(
    account: Account, desired: Desired, decision: Decision, now: datetime
) -> list[int]:
    """At most one pending retry per account: the plan replaces any waiting one."""
    supersede_waiting_retry(account_id=account.pk, now=now)
    plan = desired.case.retry if desired.case is not None else None
    if plan is None:
        return []
    return [
        _request(
            OutboxItem.Kind.PAYMENT_RETRY,
            # One idempotency key per attempt: a re-run after a crash reuses it.
            f"retry:{plan.stripe_invoice_id}:{plan.attempt_number}:{decision.pk}",
            {"stripe_invoice_id": plan.stripe_invoice_id, "attempt_number": plan.attempt_number},
            decision=decision,
            due=plan.at,
            now=now,
        )
    ]


def _move_bad_debt(
    account: Account, snapshot: Snapshot, desired: Desired, decision: Decision, now: datetime
) -> None:
    """Close the open episode (recording how the account left) and/or open a new one."""
    case = desired.case
    reason = case.bad_debt if case is not None else None
    if snapshot.bad_debt is not None and reason is None:
        exit_reason = case.resolution if case is not None and case.resolution else "recovered"
        BadDebtEpisode.objects.filter(account=account, exited_at__isnull=True).update(
            exited_at=now, exit_reason=exit_reason
        )
    if reason is not None and snapshot.bad_debt is None:
        BadDebtEpisode.objects.create(
            account=account,
            case_id=decision.case_id or case.case_pk,
            reason=reason,
            products=sorted(case.products),
            amount=case.amount_overdue,
            entered_at=now,
        )


def _request_cancellation(
    account: Account, changes: tuple[Change, ...], decision: Decision, now: datetime
) -> list[int]:
    [change] = [c for c in changes if c.store == "subscriptions"]
    return [
        _request(
            OutboxItem.Kind.CANCEL_SUBSCRIPTION,
            f"cancel:{subscription_id}:{decision.pk}",
            {"subscription_id": subscription_id},
            decision=decision,
            due=now,
            now=now,
        )
        for subscription_id in change.after
    ]


def _request_revert(
    account: Account,
    snapshot: Snapshot,
    desired: Desired,
    changes: tuple[Change, ...],
    decision: Decision,
    now: datetime,
) -> list[int]:
    [change] = [c for c in changes if c.store == "upgrades"]
    unpaid = [i for i in snapshot.invoices if i.pk in desired.case.invoice_pks]
    ids = []
    for subscription_id in change.after:
        invoices = sorted(
            i.stripe_invoice_id
            for i in unpaid
            if i.subscription_id == subscription_id and i.status in ("open", "uncollectible")
        )
        items = snapshot.items_before_upgrade.get(subscription_id, ())
        payload = {
            "subscription_id": subscription_id,
            "items": [{"price": price, "quantity": quantity} for price, quantity in items],
            "invoices": invoices,
        }
        key = f"revert:{subscription_id}:{decision.pk}"
        ids.append(
            _request(
                OutboxItem.Kind.REVERT_UPGRADE, key, payload, decision=decision, due=now, now=now
            )
        )
    return ids


def _request_lookups(
    account: Account, changes: tuple[Change, ...], decision: Decision, now: datetime
) -> list[int]:
    [change] = [c for c in changes if c.store == "lookups"]
    return [
        _request(
            OutboxItem.Kind.FAILURE_LOOKUP,
            f"lookup:{lookup}:{decision.pk}",
            {"lookup": lookup, "stripe_invoice_id": lookup.rpartition(":")[0]},
            decision=decision,
            due=now,
            now=now,
        )
        for lookup in change.after
    ]


def _request(
    kind: str, key: str, payload: dict, *, decision: Decision, due: datetime, now: datetime
) -> int:
    """One side effect for the outbox, due at `due`; its key is its idempotency key."""
    return add_item(
        account_id=decision.account_id,
        decision_id=decision.pk,
        kind=kind,
        key=key,
        payload=payload,
        due=due,
        now=now,
    )
