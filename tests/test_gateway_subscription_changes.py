"""Reverting a subscription to a list of items and voiding an invoice: StripeGateway against
the local fake Stripe, the pure item diff, and the SimulatedGateway. No database needed."""

import pytest

from billing_events.gateway import InvoiceResult, SimulatedGateway, StripeGateway
from billing_events.gateway.stripe_answers import subscription_item_changes
from tests.fake_stripe import (
    API_KEY,
    fake_stripe_fixture,  # noqa: F401 - provides the fake_stripe fixture
)


@pytest.fixture
def stripe_gateway(fake_stripe) -> StripeGateway:
    return StripeGateway(API_KEY, fake_stripe.url, timeout_seconds=5)


# --- the item diff: plain values -----------------------------------------------------------


def _item(item_id: str, price: str, quantity: int | None = 1) -> dict:
    return {"id": item_id, "price": {"id": price}, "quantity": quantity}


@pytest.mark.parametrize(
    ("current", "wanted", "expected"),
    [
        pytest.param(
            [_item("si_b", "price_base"), _item("si_u", "price_up")],
            {"price_base": 1},
            [{"id": "si_u", "deleted": True}],
            id="drop the upgrade",
        ),
        pytest.param(
            [_item("si_b", "price_base", 5)],
            {"price_base": 2},
            [{"id": "si_b", "quantity": 2}],
            id="seats back down",
        ),
        pytest.param(
            [_item("si_pro", "price_pro")],
            {"price_basic": 1},
            [{"id": "si_pro", "deleted": True}, {"price": "price_basic", "quantity": 1}],
            id="plan swap back",
        ),
        pytest.param(
            [_item("si_b", "price_base", 3), _item("si_a", "price_addon")],
            {"price_base": 3, "price_addon": 1},
            [],
            id="already as wanted",
        ),
        pytest.param(
            [_item("si_m", "price_metered", None)],
            {"price_metered": None},
            [],
            id="metered keeps its quantity",
        ),
        pytest.param(
            [_item("si_x", "price_x"), _item("si_b", "price_base", 4)],
            {"price_new": 2, "price_base": 1},
            [
                {"id": "si_x", "deleted": True},
                {"id": "si_b", "quantity": 1},
                {"price": "price_new", "quantity": 2},
            ],
            id="delete, update, add in that order",
        ),
    ],
)
def test_subscription_item_changes(current, wanted, expected):
    assert subscription_item_changes(current, wanted) == expected


# --- revert through Stripe --------------------------------------------------------------------


def test_revert_puts_back_exactly_the_items_in_one_update_without_proration(
    fake_stripe, stripe_gateway
):
    _base, seats, upgrade = fake_stripe.add_subscription(
        "sub_r", ["price_base", "price_seats", "price_upgrade"], quantities={"price_seats": 8}
    )

    result = stripe_gateway.revert_subscription(
        subscription_id="sub_r",
        items=[
            {"price": "price_base", "quantity": 1},
            {"price": "price_seats", "quantity": 5},
            {"price": "price_support", "quantity": 1},
        ],
        idempotency_key="revert-1",
    )

    assert (result.ok, result.status, result.retryable_error) == (True, "active", False)
    [update] = fake_stripe.requests_to("POST", "/v1/subscriptions/sub_r")
    assert update.form == {
        "items[0][id]": upgrade,
        "items[0][deleted]": "true",
        "items[1][id]": seats,
        "items[1][quantity]": "5",
        "items[2][price]": "price_support",
        "items[2][quantity]": "1",
        "proration_behavior": "none",
    }
    assert update.header("Idempotency-Key") == "revert-1"
    assert fake_stripe.items_of("sub_r") == {"price_base": 1, "price_seats": 5, "price_support": 1}
    assert [
        listing.query["subscription"]
        for listing in fake_stripe.requests_to("GET", "/v1/subscription_items")
    ] == ["sub_r"]


def test_revert_of_a_subscription_already_as_wanted_sends_no_update(fake_stripe, stripe_gateway):
    fake_stripe.add_subscription("sub_same", ["price_base"], quantities={"price_base": 2})

    result = stripe_gateway.revert_subscription(
        subscription_id="sub_same",
        items=[{"price": "price_base", "quantity": 2}],
        idempotency_key="revert-1",
    )

    assert (result.ok, result.status) == (True, "active")
    assert not fake_stripe.requests_to("POST", "/v1/subscriptions/sub_same")


def test_revert_retried_after_it_went_through_changes_nothing_more(fake_stripe, stripe_gateway):
    """The answer was lost, the caller asks again with the same key: already as wanted."""
    fake_stripe.add_subscription("sub_again", ["price_base", "price_up"])
    wanted = [{"price": "price_base", "quantity": 1}]

    first = stripe_gateway.revert_subscription(
        subscription_id="sub_again", items=wanted, idempotency_key="revert-1"
    )
    again = stripe_gateway.revert_subscription(
        subscription_id="sub_again", items=wanted, idempotency_key="revert-1"
    )

    assert first.ok and again.ok
    assert len(fake_stripe.requests_to("POST", "/v1/subscriptions/sub_again")) == 1
    assert fake_stripe.items_of("sub_again") == {"price_base": 1}


def test_revert_refused_by_stripe_is_final_with_its_message(fake_stripe, stripe_gateway):
    fake_stripe.add_subscription("sub_no", ["price_base", "price_up"])
    fake_stripe.refuse_updates("sub_no", status=400, message="This price is archived.")

    result = stripe_gateway.revert_subscription(
        subscription_id="sub_no",
        items=[{"price": "price_base", "quantity": 1}],
        idempotency_key="revert-1",
    )

    assert (result.ok, result.retryable_error) == (False, False)
    assert "This price is archived." in result.message
    assert fake_stripe.items_of("sub_no") == {"price_base": 1, "price_up": 1}


def test_revert_of_a_cancelled_subscription_is_refused(fake_stripe, stripe_gateway):
    fake_stripe.add_subscription("sub_gone", ["price_base", "price_up"], status="canceled")

    result = stripe_gateway.revert_subscription(
        subscription_id="sub_gone",
        items=[{"price": "price_base", "quantity": 1}],
        idempotency_key="revert-1",
    )

    assert (result.ok, result.retryable_error) == (False, False)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_revert_during_a_stripe_failure_or_rate_limit_is_retryable(
    fake_stripe, stripe_gateway, status
):
    fake_stripe.add_subscription("sub_5xx", ["price_base", "price_up"])
    fake_stripe.refuse_updates("sub_5xx", status=status, message="An unknown error occurred.")

    result = stripe_gateway.revert_subscription(
        subscription_id="sub_5xx",
        items=[{"price": "price_base", "quantity": 1}],
        idempotency_key="revert-1",
    )

    assert (result.ok, result.retryable_error) == (False, True)


def test_revert_when_stripe_is_unreachable_is_retryable():
    gw = StripeGateway(API_KEY, "http://127.0.0.1:9", timeout_seconds=0.5)

    result = gw.revert_subscription(
        subscription_id="sub_x", items=[{"price": "price_base", "quantity": 1}], idempotency_key="r"
    )

    assert (result.ok, result.retryable_error) == (False, True)


def test_revert_with_a_price_twice_is_refused_before_asking_stripe(fake_stripe, stripe_gateway):
    fake_stripe.add_subscription("sub_dup", ["price_base"])

    result = stripe_gateway.revert_subscription(
        subscription_id="sub_dup",
        items=[{"price": "price_base", "quantity": 1}, {"price": "price_base", "quantity": 2}],
        idempotency_key="revert-1",
    )

    assert (result.ok, result.retryable_error) == (False, False)
    assert not fake_stripe.requests


# --- voiding an invoice --------------------------------------------------------------------


def test_void_open_invoice(fake_stripe, stripe_gateway):
    fake_stripe.invoice_status["in_v"] = "open"

    result = stripe_gateway.void_invoice(invoice_id="in_v", idempotency_key="void-1")

    assert result == InvoiceResult(ok=True, status="void")
    [request] = fake_stripe.requests_to("POST", "/v1/invoices/in_v/void")
    assert request.header("Idempotency-Key") == "void-1"
    assert fake_stripe.invoice_status["in_v"] == "void"


def test_void_of_a_void_invoice_is_ok(fake_stripe, stripe_gateway):
    fake_stripe.invoice_status["in_vv"] = "void"

    result = stripe_gateway.void_invoice(invoice_id="in_vv", idempotency_key="void-2")

    assert (result.ok, result.status, result.message) == (True, "void", "already void")


def test_void_of_a_paid_invoice_is_refused_with_status_paid(fake_stripe, stripe_gateway):
    """The customer paid after all: the caller must not treat the invoice as voided."""
    fake_stripe.invoice_status["in_vp"] = "paid"

    result = stripe_gateway.void_invoice(invoice_id="in_vp", idempotency_key="void-1")

    assert (result.ok, result.status, result.retryable_error) == (False, "paid", False)
    assert fake_stripe.invoice_status["in_vp"] == "paid"


def test_void_of_a_draft_is_refused_with_stripes_message(fake_stripe, stripe_gateway):
    fake_stripe.invoice_status["in_vd"] = "draft"

    result = stripe_gateway.void_invoice(invoice_id="in_vd", idempotency_key="void-1")

    assert (result.ok, result.status, result.retryable_error) == (False, "draft", False)
    assert "HTTP 400" in result.message and "This invoice is draft" in result.message


def test_void_when_stripe_is_unreachable_is_retryable():
    gw = StripeGateway(API_KEY, "http://127.0.0.1:9", timeout_seconds=0.5)

    result = gw.void_invoice(invoice_id="in_x", idempotency_key="void-1")

    assert (result.ok, result.status, result.retryable_error) == (False, "", True)


# --- the simulated gateway ---------------------------------------------------------------


def test_simulated_revert_and_void_are_recorded():
    sim = SimulatedGateway()
    items = [{"price": "price_base", "quantity": 1}]

    revert = sim.revert_subscription(subscription_id="sub_s", items=items, idempotency_key="r")
    void = sim.void_invoice(invoice_id="in_s", idempotency_key="v")
    pay_after = sim.pay_invoice(invoice_id="in_s", idempotency_key="p")

    assert (revert.ok, revert.status) == (True, "active")
    assert sim.subscription_items["sub_s"] == items
    assert void == InvoiceResult(ok=True, status="void")
    assert (pay_after.outcome, pay_after.invoice_status) == ("error", "void")
    assert sim.calls == [
        ("revert_subscription", "sub_s", "r"),
        ("void_invoice", "in_s", "v"),
        ("pay_invoice", "in_s", "p"),
    ]


def test_simulated_void_of_a_paid_invoice_is_refused():
    sim = SimulatedGateway()
    sim.pay_invoice(invoice_id="in_p", idempotency_key="p")

    result = sim.void_invoice(invoice_id="in_p", idempotency_key="v")

    assert (result.ok, result.status) == (False, "paid")
