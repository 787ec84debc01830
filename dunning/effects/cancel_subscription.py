"""Cancel a subscription at the end of the ladder, through its normal lifecycle."""

from datetime import datetime

from billing_events import services as billing
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem
from dunning.triggers import TriggerKind

KEEP_TRYING = False
HANDS_BACK = True
HAND_BACK_TRIGGER = TriggerKind.SIDE_EFFECT_COMPLETED


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


def fold_pending(row: dict, payload: dict, running: bool, snapshot: dict) -> int:
    snapshot["cancel_requested"].add(payload["subscription_id"])
    return 1


def fold_ended(row: dict, payload: dict, snapshot: dict) -> None:
    if row["status"] == "dead":
        snapshot["cancel_refused"][payload["subscription_id"]] = row["last_error"][:200]
