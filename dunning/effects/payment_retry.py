"""Charge an unpaid invoice again, off-session, with one idempotency key per attempt."""

from datetime import datetime

from django.db import connection, transaction

from billing_events import services as billing
from billing_events.models import Account
from core import clock
from dunning.effects.result import EffectResult
from dunning.models import OPEN_STATES, DunningCase, OutboxItem
from dunning.outbox_items import CHARGING, LEASE
from dunning.snapshot import ScheduledRetry, aware
from dunning.triggers import TriggerKind

KEEP_TRYING = False
HANDS_BACK = True
# The engine reads a closed retry as the charge's result, not as any side effect done.
HAND_BACK_TRIGGER = TriggerKind.RETRY_RESULT


def still_wanted(item: OutboxItem) -> bool:
    """The last check before any charge, and the mark that the charge begins.

    Under the account lock (released before the charge: no lock is held across the call)
    the item, still pending, is marked CHARGING. Every recompute takes that lock and, when
    its plan no longer holds this retry, supersedes it unless it is so marked: a pending,
    unmarked item is therefore exactly the plan of the account's last recompute, and the
    mark makes later recomputes leave it to this worker. That plan is what would be
    computed now unless time alone changed it, which the case says by a review that is
    due and not yet made; then, or when a charge was begun before (its worker died or the
    database failed after the call), the plan is computed afresh from the stores."""
    now = clock.now()
    began = _mark_charging(item, now)
    if began is None:
        return False  # superseded: the plan changed before the charge began
    times, review_due = began
    if times == 1 and not review_due:
        return True
    from dunning.engine import retry_still_planned

    return retry_still_planned(
        account_id=item.account_id,
        stripe_invoice_id=item.payload["stripe_invoice_id"],
        attempt_number=item.payload["attempt_number"],
    )


def _mark_charging(item: OutboxItem, now: datetime) -> tuple[int, bool] | None:
    """(how many charges of this item have begun, counting this one; whether the case has
    a review due), or None when the item is no longer pending."""
    if connection.vendor != "postgresql":
        return _mark_charging_orm(item, now)
    with connection.cursor() as cursor:
        cursor.execute(
            MARK_CHARGING,
            {
                "account": item.account_id,
                "item": item.pk,
                "pending": OutboxItem.Status.PENDING,
                "lease": now + LEASE,
                "now": now,
                "open": list(OPEN_STATES),
            },
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def _t(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


# The account row is locked first (the CTE is scanned before the join yields the item to
# the UPDATE), the engine's lock order; the item's lease is renewed with the mark.
MARK_CHARGING = f"""
WITH account AS MATERIALIZED (
  SELECT id FROM {_t(Account)} WHERE id = %(account)s FOR UPDATE
)
UPDATE {_t(OutboxItem)} o
SET payload = o.payload || jsonb_build_object(
      '{CHARGING}', COALESCE((o.payload ->> '{CHARGING}')::int, 0) + 1),
    claimed_until = %(lease)s
FROM account
WHERE o.id = %(item)s AND o.account_id = account.id AND o.status = %(pending)s
RETURNING (o.payload ->> '{CHARGING}')::int, EXISTS (
  SELECT 1 FROM {_t(DunningCase)} c
  WHERE c.account_id = o.account_id AND c.state = ANY(%(open)s) AND c.next_review_at <= %(now)s
)
"""


def _mark_charging_orm(item: OutboxItem, now: datetime) -> tuple[int, bool] | None:
    """The same on SQLite (the embedded demo), in a few statements."""
    with transaction.atomic():
        list(Account.objects.select_for_update().filter(pk=item.account_id).values("pk"))
        pending = OutboxItem.objects.filter(pk=item.pk, status=OutboxItem.Status.PENDING)
        payload = pending.values_list("payload", flat=True).first()
        if payload is None:
            return None
        times = int(payload.get(CHARGING, 0)) + 1
        pending.update(payload={**payload, CHARGING: times}, claimed_until=now + LEASE)
        review_due = DunningCase.objects.filter(
            account_id=item.account_id, state__in=OPEN_STATES, next_review_at__lte=now
        ).exists()
    return times, review_due


def perform(item: OutboxItem) -> EffectResult:
    result = billing.gateway().pay_invoice(
        invoice_id=item.payload["stripe_invoice_id"], idempotency_key=item.key
    )
    if result.outcome == "error" and result.retryable_error:
        # Unknown or transient: the same key again later, so Stripe never charges twice.
        return EffectResult(ok=False, retryable=True, detail=result.message or "transient error")
    if result.outcome == "error":
        return EffectResult(ok=False, retryable=False, detail=result.message or "refused")
    detail = result.outcome + (f" ({result.decline_code})" if result.decline_code else "")
    return EffectResult(ok=True, detail=detail, data=billing.result_as_dict(result))


def record(item: OutboxItem, now: datetime) -> None:
    billing.record_retry_result(
        account_id=item.account_id,
        stripe_invoice_id=item.payload["stripe_invoice_id"],
        attempt_key=f"attempt:{item.key}",
        result=item.result,
        at=now,
    )


def fold_pending(row: dict, payload: dict, running: bool, snapshot: dict) -> int:
    # Running only once its charge has begun: a retry merely claimed is still the plan's,
    # which may replace it (its worker's check before the charge then finds it superseded).
    charging = running and bool(payload.get(CHARGING))
    snapshot["scheduled_retry"] = ScheduledRetry(
        outbox_pk=row["id"],
        stripe_invoice_id=payload["stripe_invoice_id"],
        attempt_number=payload["attempt_number"],
        at=aware(row["next_attempt_at"]),
        running=charging,
    )
    # A retry waiting for its time is a plan, not a side effect in flight.
    return int(charging)


def fold_ended(row: dict, payload: dict, snapshot: dict) -> None:
    return None
