"""The one handler: lock the account, read the stores, compute, diff, apply the diff.

handle(trigger)
  1. lock the account row (PostgreSQL row lock: one applier per account, any machine)
  2. snapshot = the five stores, in a constant number of queries
  3. desired  = compute(snapshot, now, policy)          pure
  4. changes  = diff(snapshot, desired)                  minimal
  5. if no changes: return, having written nothing
  6. apply in the same transaction: a Decision with the explanation, the case and its
     transitions, restrictions, the standing, and outbox rows for side effects
  7. after commit, wake the outbox dispatcher; workers do the network I/O, unlocked,
     and report back as triggers
"""

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.db import transaction

from billing_events.models import Account
from dunning import clock
from dunning.compute import Desired, compute
from dunning.notifications.plan import SETTLED_KINDS
from dunning.policy import Policy, current_policy
from dunning.snapshot import Snapshot
from dunning.snapshot_sql import lock_and_read
from dunning.triggers import Trigger


@dataclass(frozen=True)
class Change:
    store: str  # case, case_invoices, restrictions, standing
    field: str
    before: object
    after: object

    def as_dict(self) -> dict:
        return {
            "store": self.store,
            "field": self.field,
            "from": _jsonable(self.before),
            "to": _jsonable(self.after),
        }


@dataclass(frozen=True)
class Outcome:
    """What one recompute did; empty `changes` means it wrote nothing."""

    account_id: int
    changes: tuple[Change, ...] = ()
    decision_id: int | None = None
    summary: str = ""
    outbox_ids: tuple[int, ...] = field(default=())


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value


CASE_FIELDS = (
    "state",
    "resolution",
    "level",
    "level_since",
    "decline_class",
    "earliest_unpaid_at",
    "amount_overdue",
    "next_review_at",
    "next_retry_at",
    "shadow",
)


def diff(snapshot: Snapshot, desired: Desired, now: datetime | None = None) -> tuple[Change, ...]:
    changes: list[Change] = []
    current = snapshot.case
    if desired.case is not None and (current is None or desired.case.case_pk != current.pk):
        current = None  # a new case
    if desired.case is not None:
        for name in CASE_FIELDS:
            before = getattr(current, name) if current else None
            after = getattr(desired.case, name)
            if before != after:
                changes.append(Change("case", name, before, after))
        linked = {i.pk for i in snapshot.invoices if current and i.case_id == current.pk}
        joining = desired.case.invoice_pks - linked
        if joining:
            changes.append(
                Change("case_invoices", "invoices", sorted(linked), sorted(joining | linked))
            )
    scheduled = snapshot.scheduled_retry
    before = (
        (scheduled.stripe_invoice_id, scheduled.attempt_number, scheduled.at) if scheduled else None
    )
    plan = desired.case.retry if desired.case is not None else None
    after = (plan.stripe_invoice_id, plan.attempt_number, plan.at) if plan else None
    if before != after and not (scheduled and scheduled.running):
        changes.append(Change("retry", "scheduled", before, after))
    bad_debt = desired.case.bad_debt if desired.case is not None else None
    # Entering and leaving bad debt are the changes; the entry reason stays as it was.
    if (bad_debt is None) != (snapshot.bad_debt is None):
        changes.append(Change("bad_debt", "episode", snapshot.bad_debt, bad_debt))
    cancel = desired.case.cancel_subscriptions if desired.case is not None else frozenset()
    cancelled = {s for s, status in snapshot.subscription_status.items() if status == "canceled"}
    to_cancel = cancel - snapshot.cancel_requested - cancelled
    if to_cancel:
        changes.append(
            Change("subscriptions", "cancel", sorted(snapshot.cancel_requested), sorted(to_cancel))
        )
    lookups = desired.case.lookups if desired.case is not None else frozenset()
    if lookups - set(snapshot.lookups_asked):
        changes.append(
            Change("lookups", "requested", [], sorted(lookups - set(snapshot.lookups_asked)))
        )
    revert = desired.case.revert_upgrades if desired.case is not None else frozenset()
    to_revert = revert - snapshot.revert_requested - snapshot.reverts_done
    if to_revert:
        changes.append(
            Change("upgrades", "revert", sorted(snapshot.revert_requested), sorted(to_revert))
        )
    notices = notice_changes(snapshot, desired, now)
    if notices:
        changes.append(Change("notices", "planned", None, notices))
    if desired.restrictions != snapshot.restrictions:
        changes.append(
            Change("restrictions", "in_force", snapshot.restrictions, desired.restrictions)
        )
    if desired.standing != snapshot.standing_requested:
        changes.append(
            Change("standing", "requested", snapshot.standing_requested, desired.standing)
        )
    return tuple(changes)


def notice_changes(
    snapshot: Snapshot, desired: Desired, now: datetime | None = None
) -> dict[str, list[str]]:
    """New messages to plan, waiting ones no longer true (withdrawn) or due on another
    day (rescheduled), and shadow ones to send now that the account is enforced. A key
    already planned, whatever became of it, is never planned again. A shadow one whose
    day has not come is withdrawn too: shadow mode would not have sent it either."""
    stored = snapshot.notices
    planned = {notice.key: notice for notice in desired.notices}
    waiting = {
        key
        for key, row in stored.items()
        if row.status == "scheduled"
        or (row.status == "shadow" and now is not None and row.due_at > now)
    }
    changes = {
        "new": sorted(planned.keys() - stored.keys()),
        "withdrawn": sorted(
            key for key in waiting - planned.keys() if stored[key].kind not in SETTLED_KINDS
        ),
        "rescheduled": sorted(
            key for key in waiting & planned.keys() if stored[key].due_at != planned[key].due_at
        ),
        "promoted": sorted(
            key
            for key in planned.keys() & stored.keys()
            if desired.enforced and stored[key].status == "shadow"
        ),
    }
    return {name: keys for name, keys in changes.items() if keys}


def read_snapshot(
    *, account_id: int, now: datetime, policy: Policy, invoice_hint: str = "", lock: bool = True
) -> tuple[Account, Snapshot]:
    """The account's snapshot; with `lock`, the account row stays locked until the
    transaction ends (the one way every path that changes an account serialises)."""
    return lock_and_read(
        account_id=account_id,
        now=now,
        card_window=policy.retries.card_attempt_window,
        memory=policy.severity.memory,
        lookup_window=policy.retries.unknown_class_wait * 2,
        paid_enough=policy.severity.good_payer_min_paid,
        invoice_hint=invoice_hint,
        lock=lock,
    )


def handle(trigger: Trigger, *, policy: Policy | None = None) -> Outcome:
    """Recompute one account for any trigger. Idempotent: a second call writes nothing."""
    from dunning.apply import apply

    policy = policy or current_policy()
    with transaction.atomic():
        now = clock.now()
        account, snapshot = read_snapshot(
            account_id=trigger.account_id,
            now=now,
            policy=policy,
            invoice_hint=trigger.detail.get("invoice", ""),
        )
        desired = compute(snapshot, now, policy)
        changes = diff(snapshot, desired, now)
        if not changes:
            return Outcome(account_id=account.pk)
        return apply(
            account=account,
            snapshot=snapshot,
            desired=desired,
            changes=changes,
            trigger=trigger,
            now=now,
            policy=policy,
        )


# A due retry may run this long after its planned moment (beat's tick and queueing).
RETRY_SLACK = timedelta(minutes=5)


def retry_still_planned(*, account_id: int, stripe_invoice_id: str, attempt_number: int) -> bool:
    """Does the plan computed now, from the facts alone, hold exactly this retry? Reads
    under the account lock and releases it before the caller charges (no lock is ever
    held across the network call)."""
    policy = current_policy()
    with transaction.atomic():
        now = clock.now()
        _, snapshot = read_snapshot(account_id=account_id, now=now, policy=policy)
        # Plan as if no retry were scheduled: the item asking is the one being judged.
        desired = compute(replace(snapshot, scheduled_retry=None), now, policy)
    plan = desired.case.retry if desired.case is not None else None
    return (
        plan is not None
        and (plan.stripe_invoice_id, plan.attempt_number) == (stripe_invoice_id, attempt_number)
        and plan.at <= now + RETRY_SLACK
    )
