"""Send one customer notice: claim its day under the account lock, then deliver unlocked."""

from datetime import datetime

from dunning.effects.result import EffectResult
from dunning.models import OutboxItem
from dunning.notifications import delivery, sending

# A mail server down for hours delays a message; it never loses it.
KEEP_TRYING = True
# Nothing the engine decides depends on a message having gone out.
HANDS_BACK = False
HAND_BACK_TRIGGER = None


def still_wanted(item: OutboxItem) -> bool:
    return True  # the claim decides, under the account lock


def perform(item: OutboxItem) -> EffectResult | None:
    claim = sending.claim(
        item.payload["notice"], account_id=item.account_id, kind=item.payload.get("kind", "")
    )
    if claim.verdict == sending.DROP:
        return None
    if claim.verdict == sending.WAIT:
        return EffectResult(ok=False, defer=True, defer_until=claim.until, detail=claim.reason)
    if claim.verdict == sending.DONE:
        return EffectResult(ok=True, detail=claim.reason)
    return delivery.deliver(claim.notice)


def record(item: OutboxItem, now: datetime) -> None:
    sending.mark_sent(item.payload["notice"], now)


def fold_pending(row: dict, payload: dict, running: bool, snapshot: dict) -> int:
    return 0  # a message waiting for its day holds nothing back


def fold_ended(row: dict, payload: dict, snapshot: dict) -> None:
    return None
