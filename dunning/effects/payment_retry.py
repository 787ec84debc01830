"""Charge an unpaid invoice again, off-session, with one idempotency key per attempt."""

from datetime import datetime

from billing_events import services as billing
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem
from dunning.outbox_items import CHARGING
from dunning.snapshot import ScheduledRetry, aware
from dunning.triggers import TriggerKind

KEEP_TRYING = False
HANDS_BACK = True
# The engine reads a closed retry as the charge's result, not as any side effect done.
HAND_BACK_TRIGGER = TriggerKind.RETRY_RESULT


def still_wanted(item: OutboxItem) -> bool:
    """The last check before any charge, made on the item as its worker began it
    (`outbox_begin.begin`: under the account lock, released before the charge, the item,
    still pending, was marked CHARGING).

    Every recompute takes that lock and, when its plan no longer holds this retry,
    supersedes it unless it is so marked: a pending, unmarked item is therefore exactly
    the plan of the account's last recompute, and the mark makes later recomputes leave it
    to this worker. That plan is what would be computed now unless time alone changed it,
    which the case says by a review that is due and not yet made; then, or when a charge
    was begun before (its worker died or the database failed after the call), the plan is
    computed afresh from the stores."""
    if item.payload.get(CHARGING) == 1 and not item.review_due:
        return True
    from dunning.engine import retry_still_planned

    return retry_still_planned(
        account_id=item.account_id,
        stripe_invoice_id=item.payload["stripe_invoice_id"],
        attempt_number=item.payload["attempt_number"],
    )


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
