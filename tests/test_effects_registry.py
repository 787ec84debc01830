"""Every outbox kind has one effect module, and each module says by itself what its
items mean: to the outbox (how it hands back) and to the engine's snapshot."""

import pytest

from dunning import snapshot_rows
from dunning.effects.registry import REGISTRY
from dunning.models import OutboxItem
from dunning.outbox_items import CHARGING
from dunning.triggers import TriggerKind

INTERFACE = ("still_wanted", "perform", "record", "fold_pending", "fold_ended")


def test_every_kind_has_an_effect_module():
    assert set(REGISTRY) == set(OutboxItem.Kind.values)


def test_the_snapshot_reads_rows_through_the_registry():
    assert snapshot_rows._EFFECTS is REGISTRY


@pytest.mark.parametrize("kind", OutboxItem.Kind.values)
def test_each_effect_module_has_the_whole_interface(kind):
    effect = REGISTRY[kind]
    assert all(callable(getattr(effect, name, None)) for name in INTERFACE)
    assert isinstance(effect.KEEP_TRYING, bool)
    if effect.HANDS_BACK:
        assert isinstance(effect.HAND_BACK_TRIGGER, TriggerKind)
    else:
        assert effect.HAND_BACK_TRIGGER is None


@pytest.mark.parametrize(
    ("kind", "trigger"),
    [
        (OutboxItem.Kind.PAYMENT_RETRY, TriggerKind.RETRY_RESULT),
        (OutboxItem.Kind.CANCEL_SUBSCRIPTION, TriggerKind.SIDE_EFFECT_COMPLETED),
        (OutboxItem.Kind.REVERT_UPGRADE, TriggerKind.SIDE_EFFECT_COMPLETED),
        (OutboxItem.Kind.ACCOUNT_STANDING, TriggerKind.SIDE_EFFECT_COMPLETED),
        (OutboxItem.Kind.OUTCOME_EVENT, TriggerKind.SIDE_EFFECT_COMPLETED),
        (OutboxItem.Kind.FAILURE_LOOKUP, TriggerKind.SIDE_EFFECT_COMPLETED),
        (OutboxItem.Kind.CUSTOMER_NOTICE, None),
    ],
)
def test_a_closed_item_hands_back_as(kind, trigger):
    assert REGISTRY[kind].HAND_BACK_TRIGGER is trigger


# (kind, running) -> side effects in flight it counts for: what holds a case back.
IN_FLIGHT = [
    (OutboxItem.Kind.PAYMENT_RETRY, False, 0),  # a retry waiting for its time is a plan
    (OutboxItem.Kind.PAYMENT_RETRY, True, 0),  # claimed, its charge not begun: still a plan
    (OutboxItem.Kind.PAYMENT_RETRY, "charging", 1),  # leased and its charge begun
    (OutboxItem.Kind.CANCEL_SUBSCRIPTION, False, 1),
    (OutboxItem.Kind.REVERT_UPGRADE, False, 1),
    (OutboxItem.Kind.ACCOUNT_STANDING, False, 1),
    (OutboxItem.Kind.OUTCOME_EVENT, False, 1),
    (OutboxItem.Kind.FAILURE_LOOKUP, False, 0),
    (OutboxItem.Kind.CUSTOMER_NOTICE, False, 0),
]


@pytest.mark.parametrize(("kind", "running", "in_flight"), IN_FLIGHT)
def test_what_a_pending_item_holds_back(kind, running, in_flight):
    row = {"id": 1, "kind": kind, "next_attempt_at": None, "created_at": None}
    payload = {
        "stripe_invoice_id": "in_1",
        "attempt_number": 1,
        "subscription_id": "sub_1",
        "lookup": "in_1:1",
    }
    if running == "charging":
        running, payload[CHARGING] = True, 1
    folded = {"cancel_requested": set(), "revert_requested": set(), "lookups": {}}
    assert REGISTRY[kind].fold_pending(row, payload, running, folded) == in_flight
