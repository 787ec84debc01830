"""Charge an unpaid invoice again, off-session, with one idempotency key per attempt."""

from datetime import datetime

from billing_events import services as billing
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem
from dunning.snapshot import ScheduledRetry, aware
from dunning.triggers import TriggerKind

KEEP_TRYING = False
HANDS_BACK = True
# The engine reads a closed retry as the charge's result, not as any side effect done.
HAND_BACK_TRIGGER = TriggerKind.RETRY_RESULT


def still_wanted(item: OutboxItem) -> bool:
    """The last check before any charge: the engine's current plan, computed now under the
    account lock, still holds exactly this retry (invoice, attempt number, a retryable
    class, the card allowed). A retry claimed before a fault or a late fraud decline never
    charges on a plan that no longer stands."""
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
    snapshot["scheduled_retry"] = ScheduledRetry(
        outbox_pk=row["id"],
        stripe_invoice_id=payload["stripe_invoice_id"],
        attempt_number=payload["attempt_number"],
        at=aware(row["next_attempt_at"]),
        running=running,
    )
    # A retry waiting for its time is a plan, not a side effect in flight.
    return int(running)


def fold_ended(row: dict, payload: dict, snapshot: dict) -> None:
    return None
