"""Each handled Stripe event type becomes exactly one dunning trigger (the README's table)."""

import pytest

from billing_events.normalize import HANDLED_EVENT_TYPES
from dunning.intake.triggers import TRIGGER_FOR_EVENT
from dunning.triggers import TriggerKind as K

TABLE = [
    ("invoice.payment_failed", K.PAYMENT_FAILED),
    ("charge.failed", K.PAYMENT_FAILED),
    ("payment_intent.payment_failed", K.PAYMENT_FAILED),
    ("invoice.paid", K.PAYMENT_SUCCEEDED),
    ("invoice.payment_succeeded", K.PAYMENT_SUCCEEDED),
    ("charge.succeeded", K.PAYMENT_SUCCEEDED),
    ("invoice.marked_uncollectible", K.MARKED_UNCOLLECTIBLE),
    ("invoice.voided", K.INVOICE_VOIDED),
    ("invoice.finalized", K.INVOICE_UPDATED),
    ("invoice.updated", K.INVOICE_UPDATED),
    ("customer.subscription.created", K.SUBSCRIPTION_CHANGED),
    ("customer.subscription.updated", K.SUBSCRIPTION_CHANGED),
    ("customer.subscription.deleted", K.SUBSCRIPTION_CHANGED),
    ("customer.created", K.PAYMENT_METHOD_UPDATED),
    ("customer.updated", K.PAYMENT_METHOD_UPDATED),
    ("payment_method.attached", K.PAYMENT_METHOD_UPDATED),
    ("payment_method.updated", K.PAYMENT_METHOD_UPDATED),
    ("customer.source.expiring", K.CARD_EXPIRING),
]


@pytest.mark.parametrize(("event_type", "trigger"), TABLE)
def test_event_type_becomes_trigger(event_type, trigger):
    assert TRIGGER_FOR_EVENT[event_type] == trigger


def test_every_type_billing_events_parses_has_a_trigger_and_no_other():
    assert set(TRIGGER_FOR_EVENT) == HANDLED_EVENT_TYPES == {t for t, _ in TABLE}
