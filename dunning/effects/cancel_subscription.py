"""Cancel a subscription at the end of the ladder, through its normal lifecycle."""

from datetime import datetime

from billing_events import services as billing
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem

KEEP_TRYING = False
HANDS_BACK = True


def still_wanted(item: OutboxItem) -> bool:
    return not billing.subscription_cancelled(subscription_id=item.payload["subscription_id"])


def perform(item: OutboxItem) -> EffectResult:
    result = billing.gateway().cancel_subscription(
        subscription_id=item.payload["subscription_id"], idempotency_key=item.key
    )
    if result.ok:
        return EffectResult(
            ok=True, detail=result.message or f"subscription {result.status or 'canceled'}"
        )
    return EffectResult(ok=False, retryable=result.retryable_error, detail=result.message)


def record(item: OutboxItem, now: datetime) -> None:
    billing.record_subscription_cancelled(
        account_id=item.account_id, subscription_id=item.payload["subscription_id"], at=now
    )
