"""Any permutation of a set of Stripe events and API lookups, with duplicates, ends in
the same stores."""

from datetime import UTC, datetime

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_events import samples
from billing_events.lookups import merge_looked_up_failure
from billing_events.mirror import merge_fact
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from billing_events.normalize import parse_event
from tests.events import Customer

pytestmark = pytest.mark.django_db


BASIC = [("price_basic", 1)]
RENEWAL_LINES = [("price_basic", 1, False)]
UPGRADE_LINES = [("price_addon", 2, True)]


def subscription_change(
    cus: Customer,
    type: str,
    items: list[tuple[str, int]],
    before: list[tuple[str, int]] | None = None,
    status: str = "active",
) -> None:
    obj = samples.subscription(
        id=cus.subscription, customer=cus.id, created=cus.t, status=status, items=items
    )
    previous = None
    if before is not None:
        previous = {"items": samples.subscription_items(cus.subscription, before)}
    cus.events.append(samples.event(type, obj, created=cus.t, previous_attributes=previous))


def lookup(cus: Customer, charge_id: str, payment_intent_id: str, **found) -> tuple:
    """A failure read from Stripe's API about a charge the webhooks also describe."""
    return (
        "lookup",
        {
            "decline_code": None,
            "failure_code": "card_declined",
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "card_brand": None,
            "payment_method": "pm_card_visa",
            "charge_id": charge_id,
            "payment_intent_id": payment_intent_id,
            "attempted_at": datetime.fromtimestamp(cus.t, tz=UTC).isoformat(),
            **found,
        },
    )


def dunning_history() -> list:
    """Renewal fails twice with different declines (two card brands), the second time with
    the customer on the hosted page (a 3-D Secure challenge that only the charge shows), the
    card is replaced, then the customer pays on-session; the subscription is
    upgraded twice in one Stripe second, its proration invoice is voided and the upgrade
    reverted; the subscription goes past_due and back; some events share a Stripe second;
    the second failure is also read back from Stripe's API."""
    cus = Customer()
    subscription_change(cus, "customer.subscription.created", BASIC)
    cus.invoice_event("invoice.finalized", lines=RENEWAL_LINES)
    cus.tick()
    cus.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds")
    cus.invoice_event("invoice.payment_failed", attempt_count=1, lines=RENEWAL_LINES)
    subscription_change(cus, "customer.subscription.updated", BASIC, status="past_due")
    cus.tick(86400)
    cus.payment_intent_failed("pi_2", "ch_2", decline_code="expired_card", brand="mastercard")
    cus.charge_event(
        "charge.failed",
        "ch_2",
        decline_code="expired_card",
        payment_intent="pi_2",
        brand="mastercard",
        authentication_flow="challenge",
    )
    lookups = [lookup(cus, "ch_2", "pi_2", decline_code="expired_card", card_brand="MasterCard")]
    cus.invoice_event("invoice.payment_failed", attempt_count=2, lines=RENEWAL_LINES)
    subscription_change(
        cus,
        "customer.subscription.updated",
        [*BASIC, ("price_addon", 1)],
        before=BASIC,
        status="past_due",
    )
    subscription_change(
        cus,
        "customer.subscription.updated",
        [*BASIC, ("price_addon", 2)],
        before=[*BASIC, ("price_addon", 1)],
        status="past_due",
    )
    cus.invoice_event(
        "invoice.finalized",
        invoice_id="in_upgrade",
        billing_reason="subscription_update",
        lines=UPGRADE_LINES,
    )
    cus.tick(86400)
    cus.customer_updated("pm_new")
    cus.payment_method_event("payment_method.attached", "pm_new")
    cus.invoice_event(
        "invoice.voided",
        invoice_id="in_upgrade",
        status="void",
        billing_reason="subscription_update",
        lines=UPGRADE_LINES,
    )
    subscription_change(
        cus,
        "customer.subscription.updated",
        BASIC,
        before=[*BASIC, ("price_addon", 2)],
        status="past_due",
    )
    cus.tick()
    cus.charge_event(
        "charge.succeeded",
        "ch_3",
        status="succeeded",
        payment_method="pm_new",
        brand="amex",
        authentication_flow="challenge",
    )
    cus.invoice_event("invoice.paid", status="paid", attempt_count=3, lines=RENEWAL_LINES)
    subscription_change(cus, "customer.subscription.updated", BASIC, status="active")
    return cus.events + lookups


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


def apply_all(steps: list) -> dict:
    with transaction.atomic():
        for step in steps:
            if isinstance(step, tuple):
                _, found = step
                account, _ = Account.objects.get_or_create(stripe_customer_id=Customer().id)
                merge_looked_up_failure(
                    account_id=account.pk,
                    stripe_invoice_id=Customer().invoice_id,
                    found=found,
                    at=datetime(2030, 1, 1, tzinfo=UTC),
                )
                continue
            fact = parse_event(step)
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
    attempts = {row["attempt_key"]: row for row in in_order["attempts"]}
    assert [attempts[key]["card_brand"] for key in ("ch_1", "ch_2", "ch_3")] == [
        "visa",
        "mastercard",
        "amex",
    ]
    assert [attempts[key]["customer_initiated"] for key in ("ch_1", "ch_2", "ch_3")] == [
        False,
        True,
        True,
    ]
    assert invoices["in_upgrade"]["line_prices"] == [
        {"price": "price_addon", "quantity": 2, "proration": True}
    ]
    assert renewal["hosted_invoice_url"].endswith(Customer().invoice_id)
    subscription = in_order["subscriptions"][0]
    assert subscription["items"] == [{"price": "price_basic", "quantity": 1}]
    # The later of the two same-second upgrades: the reverting update is no upgrade.
    assert subscription["items_before_upgrade"] == [
        {"price": "price_addon", "quantity": 1},
        {"price": "price_basic", "quantity": 1},
    ]
    assert subscription["upgraded_at"] == invoices["in_upgrade"]["stripe_created"]


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
