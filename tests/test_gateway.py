"""The payment gateway: StripeGateway against a local server answering as Stripe does,
and the deterministic SimulatedGateway. No database needed."""

import csv
import logging
import time
from pathlib import Path

import pytest
from django.test import override_settings

from billing_events import gateway
from billing_events.gateway import (
    SimulatedGateway,
    StripeGateway,
    declined,
    failed,
    gateway_from_settings,
    succeeded,
)
from tests.fake_stripe import (
    API_KEY,
    Decline,
    Ok,
    RateLimited,
    ServerError,
    Slow,
    fake_stripe_fixture,  # noqa: F401 - provides the fake_stripe fixture
)

DECLINE_CLASSES = {
    row["decline_code"]: row["class"]
    for row in csv.DictReader(
        (Path(__file__).resolve().parent.parent / "dunning/policy_data/decline_codes.csv").open()
    )
}


@pytest.fixture
def stripe_gateway(fake_stripe) -> StripeGateway:
    return StripeGateway(API_KEY, fake_stripe.url, timeout_seconds=5)


def pay(gw: StripeGateway, invoice_id: str, key: str = "attempt-1"):
    return gw.pay_invoice(invoice_id=invoice_id, idempotency_key=key)


# --- paying an invoice ------------------------------------------------------------------


def test_successful_pay_reports_paid_invoice_and_payment_intent(fake_stripe, stripe_gateway):
    fake_stripe.script("in_ok", [Ok()])

    result = pay(stripe_gateway, "in_ok")

    assert result.outcome == "succeeded"
    assert result.invoice_status == "paid"
    assert result.payment_intent_id == "pi_for_in_ok"
    assert result.retryable_error is False
    assert fake_stripe.invoice_status["in_ok"] == "paid"


def test_pay_is_off_session_authenticated_and_idempotent_per_attempt(fake_stripe, stripe_gateway):
    fake_stripe.script("in_req", [Ok()])

    pay(stripe_gateway, "in_req", key="dunning:in_req:attempt:3")

    [request] = fake_stripe.requests_to("POST", "/v1/invoices/in_req/pay")
    assert request.form["off_session"] == "true"
    assert request.header("Idempotency-Key") == "dunning:in_req:attempt:3"
    assert request.header("Authorization") == f"Bearer {API_KEY}"
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("decline", "expected_class"),
    [
        (Decline("insufficient_funds", advice_code="try_again_later"), "soft"),
        (Decline("expired_card", advice_code="do_not_try_again"), "hard"),
        (Decline("fraudulent", network_advice_code="03", network_decline_code="59"), "fraud"),
        (Decline("authentication_required", advice_code="confirm_card_data"), "auth_required"),
    ],
    ids=lambda value: getattr(value, "decline_code", value),
)
def test_decline_of_each_class_carries_every_code(
    fake_stripe, stripe_gateway, decline, expected_class
):
    fake_stripe.script("in_dec", [decline])

    result = pay(stripe_gateway, "in_dec")

    assert result.outcome == "declined"
    assert result.retryable_error is False
    assert result.decline_code == decline.decline_code
    assert DECLINE_CLASSES[result.decline_code] == expected_class
    assert result.failure_code == "card_declined"
    assert result.advice_code == decline.advice_code
    assert result.network_advice_code == decline.network_advice_code
    assert result.network_decline_code == decline.network_decline_code
    assert result.charge_id == fake_stripe.charges["in_dec"][0]
    assert result.payment_intent_id == "pi_for_in_dec"
    assert result.message == "Your card was declined."


@pytest.mark.parametrize(
    ("code", "expected_decline_code"),
    [
        ("expired_card", "expired_card"),
        ("incorrect_cvc", "incorrect_cvc"),
        ("invoice_payment_intent_requires_action", "authentication_required"),
    ],
)
def test_card_error_without_decline_code_classifies_by_error_code(
    fake_stripe, stripe_gateway, code, expected_decline_code
):
    fake_stripe.script("in_code", [Decline(None, code=code)])

    result = pay(stripe_gateway, "in_code")

    assert result.outcome == "declined"
    assert result.failure_code == code
    assert result.decline_code == expected_decline_code
    assert expected_decline_code in DECLINE_CLASSES


@pytest.mark.parametrize(
    "scenario", [ServerError(500), ServerError(503, should_retry=None), RateLimited()]
)
def test_5xx_and_429_are_retryable_errors_not_declines(fake_stripe, stripe_gateway, scenario):
    fake_stripe.script("in_err", [scenario])

    result = pay(stripe_gateway, "in_err")

    assert result.outcome == "error"
    assert result.retryable_error is True
    assert result.decline_code is None
    assert fake_stripe.invoice_status["in_err"] == "open"


def test_rate_limited_attempt_retried_with_same_key_charges_once(fake_stripe, stripe_gateway):
    fake_stripe.script("in_429", [RateLimited(), Ok()])

    first = pay(stripe_gateway, "in_429", key="k-429")
    second = pay(stripe_gateway, "in_429", key="k-429")

    assert (first.outcome, first.retryable_error) == ("error", True)
    assert second.outcome == "succeeded"
    keys = [
        r.header("Idempotency-Key")
        for r in fake_stripe.requests_to("POST", "/v1/invoices/in_429/pay")
    ]
    assert keys == ["k-429", "k-429"]
    assert len(fake_stripe.charges["in_429"]) == 1


def test_500_stripe_will_replay_asks_for_a_new_key(fake_stripe, stripe_gateway):
    """Stripe stores a 5xx under the key (Stripe-Should-Retry: false): same key, same 500."""
    fake_stripe.script("in_500", [ServerError(500, should_retry="false"), Ok()])

    first = pay(stripe_gateway, "in_500", key="k-1")
    replay = pay(stripe_gateway, "in_500", key="k-1")
    fresh = pay(stripe_gateway, "in_500", key="k-2")

    assert first.retryable_error and first.new_key_needed
    assert replay.outcome == "error"
    assert fresh.outcome == "succeeded"


def test_timeout_is_retryable_and_retry_with_same_key_gets_the_real_outcome(fake_stripe):
    """The client gives up after 0.5 s while Stripe goes on and charges the card. A retry
    while Stripe still works on it gets 409 (retryable); once done, the retry with the same
    key is answered from Stripe's idempotency store: paid, and charged only once."""
    fast_gateway = StripeGateway(API_KEY, fake_stripe.url, timeout_seconds=0.5)
    fake_stripe.script("in_slow", [Slow(1.0, then=Ok()), Ok()])

    started = time.monotonic()
    first = pay(fast_gateway, "in_slow", key="k-slow")
    elapsed = time.monotonic() - started
    too_soon = pay(fast_gateway, "in_slow", key="k-slow")
    fake_stripe.wait_idle()
    retry = pay(fast_gateway, "in_slow", key="k-slow")

    assert elapsed < 0.9
    assert (first.outcome, first.retryable_error, first.new_key_needed) == ("error", True, False)
    assert "Timeout" in first.message
    assert (too_soon.outcome, too_soon.retryable_error) == ("error", True)
    assert too_soon.failure_code == "idempotency_key_in_use"
    assert retry.outcome == "succeeded"
    assert len(fake_stripe.charges["in_slow"]) == 1
    keys = {
        r.header("Idempotency-Key")
        for r in fake_stripe.requests_to("POST", "/v1/invoices/in_slow/pay")
    }
    assert keys == {"k-slow"}


def test_unreachable_stripe_is_a_retryable_error():
    gw = StripeGateway(API_KEY, "http://127.0.0.1:9", timeout_seconds=0.5)

    result = pay(gw, "in_nowhere")

    assert (result.outcome, result.retryable_error) == ("error", True)
    assert "could not reach Stripe" in result.message


def test_new_attempt_after_decline_uses_new_key_and_can_succeed(fake_stripe, stripe_gateway):
    fake_stripe.script("in_again", [Decline("insufficient_funds"), Ok()])

    first = pay(stripe_gateway, "in_again", key="attempt-1")
    second = pay(stripe_gateway, "in_again", key="attempt-2")

    assert first.outcome == "declined"
    assert second.outcome == "succeeded"
    assert fake_stripe.attempt_count["in_again"] == 2


def test_already_paid_invoice_is_success(fake_stripe, stripe_gateway):
    """Paid meanwhile (webhook race, customer paid on the hosted page): Stripe answers 400."""
    fake_stripe.invoice_status["in_paid"] = "paid"

    result = pay(stripe_gateway, "in_paid")

    assert result.outcome == "succeeded"
    assert result.invoice_status == "paid"
    assert fake_stripe.requests_to("GET", "/v1/invoices/in_paid")


def test_voided_invoice_is_a_final_error_with_its_status(fake_stripe, stripe_gateway):
    fake_stripe.invoice_status["in_void"] = "void"

    result = pay(stripe_gateway, "in_void")

    assert result.outcome == "error"
    assert result.retryable_error is False
    assert result.invoice_status == "void"


def test_wrong_api_key_is_a_final_error(fake_stripe):
    gw = StripeGateway("sk_test_wrong", fake_stripe.url, timeout_seconds=5)

    result = pay(gw, "in_auth")

    assert (result.outcome, result.retryable_error) == ("error", False)


def test_logs_name_the_invoice_and_outcome_never_the_key_or_card(
    fake_stripe, stripe_gateway, caplog
):
    fake_stripe.script("in_log", [Decline("insufficient_funds"), ServerError(), Ok()])

    with caplog.at_level(logging.DEBUG):
        for n in range(3):
            pay(stripe_gateway, "in_log", key=f"attempt-{n}")

    ours = [r.getMessage() for r in caplog.records if r.name == "billing_events.gateway"]
    assert len(ours) == 3
    assert "invoice=in_log" in ours[0]
    assert "outcome=declined" in ours[0] and "decline_code=insufficient_funds" in ours[0]
    assert "outcome=error" in ours[1] and "retryable=True" in ours[1]
    assert "outcome=succeeded" in ours[2]
    assert all("4242" not in line and "AOB934RVNwzk6xtn" not in line for line in ours)
    assert API_KEY not in caplog.text
    assert API_KEY.removeprefix("sk_test_") not in caplog.text


def test_gateway_repr_hides_the_api_key(fake_stripe, stripe_gateway):
    assert API_KEY not in repr(stripe_gateway)


# --- subscriptions -------------------------------------------------------------------------


def test_cancel_subscription_deletes_it(fake_stripe, stripe_gateway):
    fake_stripe.add_subscription("sub_1", ["price_base"])

    result = stripe_gateway.cancel_subscription(subscription_id="sub_1", idempotency_key="c-1")

    assert (result.ok, result.status) == (True, "canceled")
    [request] = fake_stripe.requests_to("DELETE", "/v1/subscriptions/sub_1")
    assert request.header("Authorization") == f"Bearer {API_KEY}"
    assert fake_stripe.subscriptions["sub_1"]["status"] == "canceled"


def test_cancelling_a_cancelled_subscription_is_ok(fake_stripe, stripe_gateway):
    fake_stripe.add_subscription("sub_2", ["price_base"])
    stripe_gateway.cancel_subscription(subscription_id="sub_2", idempotency_key="c-1")

    again = stripe_gateway.cancel_subscription(subscription_id="sub_2", idempotency_key="c-2")

    assert (again.ok, again.status) == (True, "canceled")


def test_cancel_of_a_subscription_stripe_does_not_know_is_recorded_as_cancelled(
    fake_stripe, stripe_gateway
):
    """404 on the cancel and on the look that follows: gone, so asking again would never end."""
    result = stripe_gateway.cancel_subscription(subscription_id="sub_nope", idempotency_key="c")

    assert (result.ok, result.status, result.retryable_error) == (True, "canceled", False)
    assert result.message == "no such subscription at Stripe: recorded as cancelled"
    assert [(r.method, r.path) for r in fake_stripe.requests] == [
        ("DELETE", "/v1/subscriptions/sub_nope"),
        ("GET", "/v1/subscriptions/sub_nope"),
    ]


def test_cancelling_an_expired_incomplete_subscription_is_ok(fake_stripe, stripe_gateway):
    fake_stripe.add_subscription("sub_exp", ["price_base"], status="incomplete_expired")

    result = stripe_gateway.cancel_subscription(subscription_id="sub_exp", idempotency_key="c")

    assert (result.ok, result.status) == (True, "incomplete_expired")


def test_subscription_call_during_outage_is_retryable(fake_stripe):
    gw = StripeGateway(API_KEY, "http://127.0.0.1:9", timeout_seconds=0.5)

    result = gw.cancel_subscription(subscription_id="sub_1", idempotency_key="c-1")

    assert (result.ok, result.retryable_error) == (False, True)


# --- the simulated gateway -------------------------------------------------------------------


def test_simulated_gateway_follows_the_script_then_the_default():
    sim = SimulatedGateway()
    sim.script("in_s", [declined("insufficient_funds"), declined("insufficient_funds")])

    results = [sim.pay_invoice(invoice_id="in_s", idempotency_key=f"k{n}") for n in range(3)]

    assert [r.outcome for r in results] == ["declined", "declined", "succeeded"]
    assert results[0].decline_code == "insufficient_funds"
    assert results[0].charge_id == "ch_sim_in_s_1"
    assert results[2].invoice_status == "paid"
    assert sim.attempts("in_s") == 3


def test_simulated_gateway_replays_a_key_and_stays_paid():
    sim = SimulatedGateway()
    sim.script("in_r", [failed(retryable=True, message="timeout"), succeeded()])

    first = sim.pay_invoice(invoice_id="in_r", idempotency_key="k1")
    replay = sim.pay_invoice(invoice_id="in_r", idempotency_key="k1")
    paid = sim.pay_invoice(invoice_id="in_r", idempotency_key="k2")
    after = sim.pay_invoice(invoice_id="in_r", idempotency_key="k3")

    assert first == replay
    assert first.retryable_error is True
    assert (paid.outcome, after.outcome) == ("succeeded", "succeeded")
    assert sim.attempts("in_r") == 2


def test_simulated_gateway_asks_decide_when_nothing_is_scripted():
    def decide(invoice_id: str, attempt: int):
        return succeeded() if attempt >= 3 else declined("do_not_honor")

    sim = SimulatedGateway(decide=decide)

    outcomes = [
        sim.pay_invoice(invoice_id="in_d", idempotency_key=f"k{n}").outcome for n in range(4)
    ]

    assert outcomes == ["declined", "declined", "succeeded", "succeeded"]


def test_simulated_subscription_calls_are_recorded():
    sim = SimulatedGateway()

    cancel = sim.cancel_subscription(subscription_id="sub_s", idempotency_key="c")
    revert = sim.revert_subscription(
        subscription_id="sub_t", items=[{"price": "price_base", "quantity": 1}], idempotency_key="r"
    )

    assert (cancel.ok, cancel.status, revert.ok) == (True, "canceled", True)
    assert [call[0] for call in sim.calls] == ["cancel_subscription", "revert_subscription"]


# --- choosing the gateway ---------------------------------------------------------------------


def test_gateway_from_settings_without_key_is_the_shared_simulation():
    with override_settings(STRIPE_API_KEY=""):
        assert gateway_from_settings() is gateway.SIMULATED


def test_gateway_from_settings_with_key_calls_stripe_at_the_configured_base(fake_stripe):
    fake_stripe.script("in_cfg", [Decline("insufficient_funds")])

    with override_settings(STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=fake_stripe.url):
        gw = gateway_from_settings()
        result = gw.pay_invoice(invoice_id="in_cfg", idempotency_key="k")

    assert isinstance(gw, StripeGateway)
    assert result.decline_code == "insufficient_funds"
    assert fake_stripe.requests_to("POST", "/v1/invoices/in_cfg/pay")


@pytest.mark.parametrize(
    ("environment", "api_base", "expected"),
    [
        ({}, "https://api.stripe.com", None),
        (
            {"HTTPS_PROXY": "http://proxy.internal:3128"},
            "https://api.stripe.com",
            {"https": "http://proxy.internal:3128"},
        ),
        (
            {"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "stripe.com"},
            "https://api.stripe.com",
            None,
        ),
        # By scheme, as requests chooses per request: an http proxy is not used for https.
        (
            {"HTTP_PROXY": "http://proxy.internal:3128"},
            "https://api.stripe.com",
            {"http": "http://proxy.internal:3128"},
        ),
    ],
)
def test_the_gateway_reads_the_proxy_for_stripe_once_from_the_environment(
    monkeypatch, environment, api_base, expected
):
    """The session does not read the environment on every charge (trust_env off), so the
    proxy settings that apply to Stripe's address are read when the gateway is made."""
    from billing_events.gateway import stripe_api

    for name in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    assert stripe_api._proxy(api_base) == expected
    assert stripe_api._session().trust_env is False
