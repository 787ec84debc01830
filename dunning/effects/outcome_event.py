"""Deliver a payment outcome event to a subscriber, in order per subscriber."""

from datetime import datetime

from core import clock
from dunning import outcomes
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem
from dunning.triggers import TriggerKind

KEEP_TRYING = True
HANDS_BACK = True
HAND_BACK_TRIGGER = TriggerKind.SIDE_EFFECT_COMPLETED


def still_wanted(item: OutboxItem) -> bool:
    return True


def perform(item: OutboxItem) -> EffectResult:
    if outcomes.earlier_undelivered(item):
        return EffectResult(ok=False, defer=True, detail="waiting for an earlier event")
    return outcomes.deliver(item, clock.now())


def record(item: OutboxItem, now: datetime) -> None:
    return None


def fold_pending(row: dict, payload: dict, running: bool, snapshot: dict) -> int:
    return 1  # in flight: the engine waits for it before changing course


def fold_ended(row: dict, payload: dict, snapshot: dict) -> None:
    return None
