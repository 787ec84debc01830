"""Tell Account Management the account's standing."""

from datetime import datetime

from dunning.account_management import send_standing
from dunning.effects.result import EffectResult
from dunning.models import AccountStanding, OutboxItem
from dunning.triggers import TriggerKind

# A standing must converge however long Account Management is down.
KEEP_TRYING = True
HANDS_BACK = True
HAND_BACK_TRIGGER = TriggerKind.SIDE_EFFECT_COMPLETED


def still_wanted(item: OutboxItem) -> bool:
    requested = (
        AccountStanding.objects.filter(account_id=item.account_id)
        .values_list("requested", flat=True)
        .first()
    )
    return requested == item.payload["standing"]


def perform(item: OutboxItem) -> EffectResult:
    return send_standing(
        stripe_customer_id=item.payload["stripe_customer_id"],
        standing=item.payload["standing"],
        idempotency_key=item.key,
    )


def record(item: OutboxItem, now: datetime) -> None:
    AccountStanding.objects.filter(account_id=item.account_id).update(
        acknowledged=item.payload["standing"], acknowledged_at=now
    )


def fold_pending(row: dict, payload: dict, running: bool, snapshot: dict) -> int:
    return 1  # in flight: the engine waits for it before changing course


def fold_ended(row: dict, payload: dict, snapshot: dict) -> None:
    return None
