"""Deliver a payment outcome event to a subscriber, in order per subscriber."""

from datetime import datetime

from core import clock
from dunning import outcomes
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem

KEEP_TRYING = True
HANDS_BACK = True


def still_wanted(item: OutboxItem) -> bool:
    return True


def perform(item: OutboxItem) -> EffectResult:
    if outcomes.earlier_undelivered(item):
        return EffectResult(ok=False, defer=True, detail="waiting for an earlier event")
    return outcomes.deliver(item, clock.now())


def record(item: OutboxItem, now: datetime) -> None:
    return None
