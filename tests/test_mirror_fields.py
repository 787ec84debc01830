"""Card brand, customer-initiated attempts, subscription items and upgrades, invoice line
prices and hosted URL; failures looked up from Stripe's API merged with their webhooks."""

from datetime import UTC, datetime

import pytest

from billing_events import samples
from billing_events.facts import LinePrice, SubscriptionItem, card_brand
from billing_events.lookups import merge_looked_up_failure
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from billing_events.normalize import (
    is_upgrade,
    parse_items,
    parse_line_prices,
)
from tests.events import Customer, deliver


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


# --- pure rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stripe_says, stored",
    [
        ("visa", "visa"),
        ("mastercard", "mastercard"),
        ("MasterCard", "mastercard"),  # legacy Card objects
        ("American Express", "amex"),
        ("Diners Club", "diners"),
        ("Eftpos Australia", "eftpos_au"),
        ("amex", "amex"),
        ("unknown", ""),
        ("Unknown", ""),
        (None, ""),
        ("", ""),
    ],
)
def test_card_brand_is_stripes_lowercase_network_id(stripe_says, stored):
    assert card_brand(stripe_says) == stored


def items(*pairs: tuple[str, int]) -> tuple[SubscriptionItem, ...]:
    return tuple(SubscriptionItem(price, quantity) for price, quantity in pairs)


@pytest.mark.parametrize(
    "before, after, upgrade",
    [
        (items(("basic", 1)), items(("basic", 1), ("addon", 1)), True),  # price added
        (items(("basic", 1)), items(("basic", 3)), True),  # quantity raised
        (items(("basic", 1)), items(("pro", 1)), True),  # swapped: a new price
        (items(("basic", 3)), items(("basic", 2)), False),  # quantity lowered
        (items(("basic", 1), ("addon", 1)), items(("basic", 1)), False),  # price removed
        (items(("basic", 1)), items(("basic", 1)), False),  # unchanged
        (items(("basic", 2), ("addon", 1)), items(("basic", 1), ("addon", 2)), True),
        ((), items(("basic", 1)), True),
        (items(("basic", 1)), (), False),
    ],
)
def test_an_upgrade_adds_a_price_or_raises_a_quantity(before, after, upgrade):
    assert is_upgrade(before, after) is upgrade


def test_subscription_items_are_sorted_and_metered_ones_have_no_quantity():
    listed = samples.subscription_items("sub_1", [("price_b", 2), ("price_a", 1)])
    listed["data"][0]["quantity"] = None  # metered

    assert parse_items(listed) == items(("price_a", 1), ("price_b", 0))
    assert parse_items(None) == ()


def test_invoice_line_prices_read_both_api_shapes_and_skip_lines_without_a_price():
    newest = samples.invoice(
        id="in_1",
        customer="cus_1",
        created=1,
        lines=[("price_basic", 1, False), ("price_addon", 2, True)],
    )
    older = {
        "lines": {
            "data": [
                {"price": {"id": "price_basic"}, "quantity": 1, "proration": True},
                {"price": "price_addon", "quantity": None, "proration": False},
                {"price": None, "quantity": 1, "proration": False},  # a one-off item
            ]
        }
    }

    assert parse_line_prices(newest) == (
        LinePrice("price_basic", 1, False),
        LinePrice("price_addon", 2, True),
    )
    assert parse_line_prices(older) == (
        LinePrice("price_basic", 1, True),
        LinePrice("price_addon", 0, False),
    )
    # Stripe's example invoice has one line with no price.
    assert parse_line_prices(samples.sample("invoice")) == ()


# --- through the webhook -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("brand", ["visa", "mastercard", "amex"])
def test_a_charge_records_its_card_brand(stripe_sender, brand):
    cus = Customer()
    deliver(stripe_sender, cus.charge_event("charge.failed", "ch_1", brand=brand))

    assert PaymentAttempt.objects.get().card_brand == brand


@pytest.mark.django_db
def test_a_payment_intent_failure_records_the_brand_of_the_card_that_failed(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, cus.payment_intent_failed("pi_1", "ch_1", brand="amex"))

    attempt = PaymentAttempt.objects.get()
    assert (attempt.attempt_key, attempt.card_brand) == ("ch_1", "amex")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authentication_flow, customer_initiated",
    [(None, False), ("frictionless", False), ("challenge", True)],
)
def test_only_a_3ds_challenge_marks_an_attempt_customer_initiated(
    stripe_sender, authentication_flow, customer_initiated
):
    cus = Customer()
    event = cus.charge_event(
        "charge.succeeded", "ch_1", status="succeeded", authentication_flow=authentication_flow
    )
    deliver(stripe_sender, event)

    assert PaymentAttempt.objects.get().customer_initiated is customer_initiated


def subscription_change(
    cus: Customer,
    type: str,
    now: list[tuple[str, int]],
    before: list[tuple[str, int]] | None = None,
    status: str = "active",
) -> dict:
    """A subscription event with its items and, for an update, the items it replaced."""
    obj = samples.subscription(
        id=cus.subscription, customer=cus.id, created=cus.t, status=status, items=now
    )
    previous = None
    if before is not None:
        previous = {"items": samples.subscription_items(cus.subscription, before)}
    event = samples.event(type, obj, created=cus.t, previous_attributes=previous)
    cus.events.append(event)
    return event


def as_items(*pairs: tuple[str, int]) -> list[dict]:
    return [{"price": price, "quantity": quantity} for price, quantity in pairs]


@pytest.mark.django_db
def test_subscription_items_are_kept_with_their_quantities(stripe_sender):
    cus = Customer()
    created = subscription_change(
        cus, "customer.subscription.created", [("price_seat", 5), ("price_basic", 1)]
    )
    deliver(stripe_sender, created)

    subscription = Subscription.objects.get()
    assert subscription.items == as_items(("price_basic", 1), ("price_seat", 5))
    assert subscription.price_ids == ["price_basic", "price_seat"]
    assert (subscription.items_before_upgrade, subscription.upgraded_at) == ([], None)


@pytest.mark.django_db
def test_an_upgrade_keeps_the_items_from_before_it_and_when_it_happened(stripe_sender):
    cus = Customer()
    created = subscription_change(cus, "customer.subscription.created", [("price_basic", 1)])
    cus.tick(3600)
    upgraded = subscription_change(
        cus,
        "customer.subscription.updated",
        [("price_basic", 1), ("price_addon", 1)],
        before=[("price_basic", 1)],
    )
    upgraded_at = cus.t
    cus.tick(3600)
    past_due = subscription_change(
        cus,
        "customer.subscription.updated",
        [("price_basic", 1), ("price_addon", 1)],
        status="past_due",
    )

    deliver(stripe_sender, past_due, upgraded, created)  # any order

    subscription = Subscription.objects.get()
    assert subscription.status == "past_due"
    assert subscription.items == as_items(("price_addon", 1), ("price_basic", 1))
    assert subscription.items_before_upgrade == as_items(("price_basic", 1))
    assert subscription.upgraded_at == at(upgraded_at)


@pytest.mark.django_db
def test_a_downgrade_is_not_an_upgrade(stripe_sender):
    cus = Customer()
    downgraded = subscription_change(
        cus, "customer.subscription.updated", [("price_seat", 2)], before=[("price_seat", 5)]
    )
    deliver(stripe_sender, downgraded)

    subscription = Subscription.objects.get()
    assert subscription.items == as_items(("price_seat", 2))
    assert (subscription.items_before_upgrade, subscription.upgraded_at) == ([], None)


@pytest.mark.django_db
def test_the_latest_upgrade_wins_and_an_older_one_never_overwrites_it(stripe_sender):
    cus = Customer()
    first = subscription_change(
        cus, "customer.subscription.updated", [("price_seat", 3)], before=[("price_seat", 1)]
    )
    cus.tick(86400)
    second = subscription_change(
        cus, "customer.subscription.updated", [("price_seat", 7)], before=[("price_seat", 3)]
    )

    deliver(stripe_sender, second, first, second)

    subscription = Subscription.objects.get()
    assert subscription.items_before_upgrade == as_items(("price_seat", 3))
    assert subscription.upgraded_at == at(cus.t)
    assert subscription.upgrade_event_id == second["id"]
    assert subscription.items == as_items(("price_seat", 7))


@pytest.mark.django_db
def test_an_upgrade_invoice_says_which_prices_it_was_for_and_where_to_pay(stripe_sender):
    cus = Customer()
    event = cus.invoice_event(
        "invoice.payment_failed",
        invoice_id="in_upgrade",
        billing_reason="subscription_update",
        lines=[("price_addon", 1, True), ("price_basic", 1, True)],
        hosted_invoice_url="https://invoice.stripe.com/i/acct_1/test_in_upgrade",
    )
    deliver(stripe_sender, event)

    invoice = Invoice.objects.get()
    assert invoice.line_prices == [
        {"price": "price_addon", "quantity": 1, "proration": True},
        {"price": "price_basic", "quantity": 1, "proration": True},
    ]
    assert invoice.hosted_invoice_url == "https://invoice.stripe.com/i/acct_1/test_in_upgrade"


@pytest.mark.django_db
def test_invoice_lines_and_url_follow_the_newest_version(stripe_sender):
    cus = Customer()
    draft = cus.invoice_event("invoice.updated", status="draft", lines=[("price_basic", 1, False)])
    cus.tick()
    finalized = cus.invoice_event(
        "invoice.finalized", lines=[("price_basic", 1, False), ("price_addon", 2, False)]
    )

    deliver(stripe_sender, finalized, draft)

    invoice = Invoice.objects.get()
    assert [line["price"] for line in invoice.line_prices] == ["price_basic", "price_addon"]
    assert invoice.hosted_invoice_url == f"https://invoice.stripe.com/i/acct_test/{cus.invoice_id}"


# --- failures looked up from Stripe's API ------------------------------------------------


def failed_charge(cus: Customer) -> dict:
    return cus.charge_event(
        "charge.failed",
        "ch_1",
        decline_code="insufficient_funds",
        advice_code="try_again_later",
        network_advice_code="01",
        network_decline_code="51",
        payment_intent="pi_1",
        brand="mastercard",
        amount=4900,
        currency="eur",
    )


def found_for(cus: Customer, **changes) -> dict:
    """What a lookup of the charge in `failed_charge` reads from Stripe's API."""
    found = {
        "decline_code": "insufficient_funds",
        "failure_code": "card_declined",
        "advice_code": "try_again_later",
        "network_advice_code": "01",
        "network_decline_code": "51",
        "card_brand": "mastercard",
        "payment_method": "pm_card_visa",
        "charge_id": "ch_1",
        "payment_intent_id": "pi_1",
        "attempted_at": at(cus.t).isoformat(),
    }
    found.update(changes)
    return found


def attempt_rows() -> list[dict]:
    return list(PaymentAttempt.objects.values())


def open_invoice(cus: Customer) -> dict:
    return cus.invoice_event("invoice.finalized", amount_due=4900, currency="eur")


@pytest.mark.django_db
def test_a_looked_up_failure_and_its_later_webhook_are_one_attempt(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, open_invoice(cus))
    account = Account.objects.get()
    webhook = failed_charge(cus)

    created = merge_looked_up_failure(
        account_id=account.pk,
        stripe_invoice_id=cus.invoice_id,
        found=found_for(cus),
        at=at(cus.t + 300),
    )
    looked_up = attempt_rows()
    deliver(stripe_sender, webhook)

    assert created is True
    assert attempt_rows() == looked_up  # the webhook found nothing to add
    attempt = PaymentAttempt.objects.get()
    assert (attempt.attempt_key, attempt.outcome, attempt.card_brand) == (
        "ch_1",
        "failed",
        "mastercard",
    )
    assert (attempt.amount, attempt.currency, attempt.attempted_at) == (4900, "eur", at(cus.t))
    assert attempt.invoice.stripe_invoice_id == cus.invoice_id


@pytest.mark.django_db
def test_a_lookup_after_the_webhook_changes_nothing(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, open_invoice(cus), failed_charge(cus))
    before = attempt_rows()

    changed = merge_looked_up_failure(
        account_id=Account.objects.get().pk,
        stripe_invoice_id=cus.invoice_id,
        found=found_for(cus),
        at=at(cus.t + 300),
    )

    assert changed is False
    assert attempt_rows() == before


@pytest.mark.django_db
def test_a_lookup_that_knows_less_is_completed_by_the_webhook(stripe_sender):
    """No mirrored invoice, no amount, no attempt time: the lookup's time stands in until
    the webhook brings the charge's own time and amount."""
    cus = Customer()
    deliver(stripe_sender, cus.customer_updated("pm_card_visa"))
    cus.tick()
    webhook = failed_charge(cus)

    merge_looked_up_failure(
        account_id=Account.objects.get().pk,
        stripe_invoice_id=cus.invoice_id,
        found=found_for(cus, attempted_at=None, card_brand="MasterCard"),
        at=at(cus.t + 300),
    )
    assert PaymentAttempt.objects.get().attempted_at == at(cus.t + 300)
    deliver(stripe_sender, webhook)

    attempt = PaymentAttempt.objects.get()
    assert (attempt.amount, attempt.currency) == (4900, "eur")
    assert attempt.attempted_at == at(cus.t)
    assert (attempt.card_brand, attempt.decline_code) == ("mastercard", "insufficient_funds")


@pytest.mark.django_db
def test_a_lookup_fills_what_the_webhook_did_not_say(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, open_invoice(cus))
    # The intent's failure names no card, so the brand is unknown until the lookup.
    deliver(stripe_sender, cus.payment_intent_failed("pi_1", "ch_1", decline_code="expired_card"))

    changed = merge_looked_up_failure(
        account_id=Account.objects.get().pk,
        stripe_invoice_id=cus.invoice_id,
        found=found_for(cus, decline_code="expired_card", network_advice_code=None),
        at=at(cus.t + 300),
    )

    assert changed is True
    attempt = PaymentAttempt.objects.get()
    assert (attempt.card_brand, attempt.payment_method) == ("mastercard", "pm_card_visa")


@pytest.mark.django_db
def test_a_lookup_without_a_charge_is_keyed_by_its_payment_intent(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, open_invoice(cus))

    merge_looked_up_failure(
        account_id=Account.objects.get().pk,
        stripe_invoice_id=cus.invoice_id,
        found=found_for(cus, charge_id=None),
        at=at(cus.t),
    )

    assert PaymentAttempt.objects.get().attempt_key == "pi_1"
    with pytest.raises(ValueError, match="charge id or a payment intent id"):
        merge_looked_up_failure(
            account_id=Account.objects.get().pk,
            stripe_invoice_id=cus.invoice_id,
            found=found_for(cus, charge_id=None, payment_intent_id=None),
            at=at(cus.t),
        )
