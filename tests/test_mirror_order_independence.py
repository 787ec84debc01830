"""Any permutation of a set of Stripe events, with duplicates, ends in the same stores."""

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_events.mirror import merge_fact
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from billing_events.normalize import parse_event
from tests.events import Customer

pytestmark = pytest.mark.django_db


def dunning_history() -> list[dict]:
    """Renewal fails twice with different declines, the card is replaced, then it is paid;
    a proration invoice is voided; the subscription goes past_due and back; some events
    share a Stripe second."""
    cus = Customer()
    cus.subscription_event("customer.subscription.created")
    cus.invoice_event("invoice.finalized")
    cus.tick()
    cus.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds")
    cus.invoice_event("invoice.payment_failed", attempt_count=1)
    cus.subscription_event("customer.subscription.updated", status="past_due")
    cus.tick(86400)
    cus.payment_intent_failed("pi_2", "ch_2", decline_code="expired_card")
    cus.charge_event("charge.failed", "ch_2", decline_code="expired_card", payment_intent="pi_2")
    cus.invoice_event("invoice.payment_failed", attempt_count=2)
    cus.invoice_event(
        "invoice.finalized", invoice_id="in_upgrade", billing_reason="subscription_update"
    )
    cus.tick(86400)
    cus.customer_updated("pm_new")
    cus.payment_method_event("payment_method.attached", "pm_new")
    cus.invoice_event(
        "invoice.voided",
        invoice_id="in_upgrade",
        status="void",
        billing_reason="subscription_update",
    )
    cus.tick()
    cus.charge_event("charge.succeeded", "ch_3", status="succeeded")
    cus.invoice_event("invoice.paid", status="paid", attempt_count=3)
    cus.subscription_event("customer.subscription.updated", status="active")
    return cus.events


HISTORY = dunning_history()


def snapshot() -> dict:
    def rows(model, key):
        exclude = {"id", "account_id", "invoice_id", "created_at"}
        return sorted(
            ({k: v for k, v in row.items() if k not in exclude} for row in model.objects.values()),
            key=lambda row: row[key],
        )

    return {
        "accounts": rows(Account, "stripe_customer_id"),
        "invoices": rows(Invoice, "stripe_invoice_id"),
        "attempts": rows(PaymentAttempt, "attempt_key"),
        "attempt_links": sorted(
            PaymentAttempt.objects.values_list("attempt_key", "invoice__stripe_invoice_id")
        ),
        "subscriptions": rows(Subscription, "stripe_subscription_id"),
    }


def apply_all(events: list[dict]) -> dict:
    with transaction.atomic():
        for event in events:
            fact, _ = parse_event(event)
            account, _ = Account.objects.get_or_create(stripe_customer_id=fact.customer_id)
            merge_fact(account, fact)
        result = snapshot()
        transaction.set_rollback(True)
    return result


@pytest.fixture(scope="module")
def in_order(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        return apply_all(HISTORY)


def test_history_in_order_ends_where_stripe_ended(in_order):
    invoices = {row["stripe_invoice_id"]: row for row in in_order["invoices"]}
    renewal = invoices[Customer().invoice_id]
    assert renewal["status"] == "paid" and renewal["attempt_count"] == 3
    assert invoices["in_upgrade"]["status"] == "void"
    assert in_order["subscriptions"][0]["status"] == "active"
    assert in_order["accounts"][0]["default_payment_method"] == "pm_new"
    assert sorted(in_order["attempt_links"]) == [
        ("ch_1", Customer().invoice_id),
        ("ch_2", Customer().invoice_id),
        ("ch_3", Customer().invoice_id),
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    order=st.permutations(range(len(HISTORY))),
    duplicates=st.lists(st.integers(0, len(HISTORY) - 1), max_size=6),
)
def test_any_order_with_duplicates_ends_in_the_same_stores(in_order, order, duplicates):
    delivered = [HISTORY[i] for i in order] + [HISTORY[i] for i in duplicates]

    assert apply_all(delivered) == in_order


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations(range(len(HISTORY))))
def test_merging_everything_twice_changes_nothing(in_order, order):
    delivered = [HISTORY[i] for i in order]

    assert apply_all(delivered + delivered) == in_order
