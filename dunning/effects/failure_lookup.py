"""Ask Stripe for the decline data of a failure whose charge event has not arrived.

`invoice.payment_failed` can come before the `charge.failed` that carries the decline
code; the engine will not charge while the class is unknown, so it asks (one call, the
invoice with its latest charge or payment intent). What Stripe says merges into the
mirror under the charge's own key, so the webhook arriving later lands on the same row.
"""

from datetime import datetime

from billing_events import services as billing
from billing_events.gateway.results import failure_lookup_as_dict
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem
from dunning.snapshot import aware
from dunning.triggers import TriggerKind

KEEP_TRYING = False
HANDS_BACK = True
HAND_BACK_TRIGGER = TriggerKind.SIDE_EFFECT_COMPLETED


def still_wanted(item: OutboxItem) -> bool:
    """Only while the invoice is open and the failure asked about ("invoice:attempt") is still
    without its decline data: a charge event that arrived meanwhile answers it."""
    invoice_id = item.payload["stripe_invoice_id"]
    attempt = int(item.payload["lookup"].rpartition(":")[2])
    return (
        billing.open_invoice(stripe_invoice_id=invoice_id) is not None
        and billing.failed_attempts(stripe_invoice_id=invoice_id) < attempt
    )


def perform(item: OutboxItem) -> EffectResult:
    found = billing.gateway().latest_failure(invoice_id=item.payload["stripe_invoice_id"])
    if found.retryable_error:
        return EffectResult(ok=False, retryable=True, detail=found.message or "transient error")
    if not found.found:
        # Not at Stripe either yet: ask again later (bounded by the outbox's attempts; the
        # engine stops waiting after the policy's unknown-class wait anyway).
        return EffectResult(ok=False, retryable=True, detail=found.message or "no failure found")
    detail = f"decline {found.decline_code or found.failure_code or 'without a code'}"
    return EffectResult(ok=True, detail=detail, data={"found": failure_lookup_as_dict(found)})


def record(item: OutboxItem, now: datetime) -> None:
    billing.merge_looked_up_failure(
        account_id=item.account_id,
        stripe_invoice_id=item.payload["stripe_invoice_id"],
        found=item.result["found"],
        at=now,
    )


def fold_pending(row: dict, payload: dict, running: bool, snapshot: dict) -> int:
    snapshot["lookups"][payload["lookup"]] = aware(row["created_at"])
    return 0  # asking Stripe a question holds nothing back


def fold_ended(row: dict, payload: dict, snapshot: dict) -> None:
    snapshot["lookups"][payload["lookup"]] = aware(row["created_at"])
