"""latest_failure: the decline data of an invoice's latest attempt, read from Stripe in one
call, when `invoice.payment_failed` came before the event that carries the decline code.
StripeGateway against the local fake Stripe, and the SimulatedGateway. No database needed."""

import csv
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import stripe

from billing_events.gateway import (
    FailureLookup,
    SimulatedGateway,
    StripeGateway,
    failure_lookup_as_dict,
)
from billing_events.gateway.stripe_answers import (
    FAILURE_EXPAND,
    FAILURE_EXPAND_BEFORE_PAYMENTS,
    failure_from_invoice,
)
from tests.fake_stripe import (
    API_KEY,
    NOW,
    Decline,
    Ok,
    fake_stripe_fixture,  # noqa: F401 - provides the fake_stripe fixture
)

DECLINE_CLASSES = {
    row["decline_code"]: row["class"]
    for row in csv.DictReader(
        (Path(__file__).resolve().parent.parent / "dunning/policy_data/decline_codes.csv").open()
    )
}
LEGACY_API_VERSION = "2024-06-20"


@pytest.fixture
def stripe_gateway(fake_stripe) -> StripeGateway:
    return StripeGateway(API_KEY, fake_stripe.url, timeout_seconds=5)


def declined_once(fake_stripe, gw: StripeGateway, invoice_id: str, decline: Decline) -> None:
    fake_stripe.script(invoice_id, [decline])
    assert gw.pay_invoice(invoice_id=invoice_id, idempotency_key="a-1").outcome == "declined"


def expansions(request) -> set[str]:
    return {value for key, value in request.query.items() if key.startswith("expand[")}


@pytest.mark.parametrize(
    ("decline", "expected_class"),
    [
        (Decline("insufficient_funds", advice_code="try_again_later"), "soft"),
        (Decline("expired_card", advice_code="do_not_try_again", brand="mastercard"), "hard"),
        (Decline("fraudulent", network_advice_code="03", network_decline_code="59"), "fraud"),
        (Decline("authentication_required", advice_code="confirm_card_data"), "auth_required"),
    ],
    ids=lambda value: getattr(value, "decline_code", value),
)
def test_lookup_after_a_decline_carries_every_code_of_the_latest_charge(
    fake_stripe, stripe_gateway, decline, expected_class
):
    declined_once(fake_stripe, stripe_gateway, "in_dec", decline)

    result = stripe_gateway.latest_failure(invoice_id="in_dec")

    assert (result.found, result.outcome, result.retryable_error) == (True, "failed", False)
    assert result.decline_code == decline.decline_code
    assert DECLINE_CLASSES[result.decline_code] == expected_class
    assert result.failure_code == "card_declined"
    assert result.advice_code == (decline.advice_code or "")
    assert result.network_advice_code == (decline.network_advice_code or "")
    assert result.network_decline_code == (decline.network_decline_code or "")
    assert result.card_brand == decline.brand
    assert result.payment_method.startswith("pm_")
    assert result.charge_id == fake_stripe.charges["in_dec"][-1]
    assert result.payment_intent_id == "pi_for_in_dec"
    assert result.attempted_at == datetime.fromtimestamp(NOW + 1, UTC)
    assert result.message == "Your card was declined."


def test_lookup_is_one_retrieve_expanding_payments_intent_and_charge(fake_stripe, stripe_gateway):
    declined_once(fake_stripe, stripe_gateway, "in_one", Decline("insufficient_funds"))
    before = len(fake_stripe.requests)

    stripe_gateway.latest_failure(invoice_id="in_one")

    [request] = fake_stripe.requests[before:]
    assert (request.method, request.path) == ("GET", "/v1/invoices/in_one")
    assert expansions(request) == set(FAILURE_EXPAND)
    assert "payments.data.payment.payment_intent.latest_charge" in expansions(request)
    assert request.header("Stripe-Version") >= "2025-03-31"


def test_failure_stripe_recorded_before_its_decline_event_is_found(fake_stripe, stripe_gateway):
    """Stripe's own retry failed; invoice.payment_failed arrived, charge.failed not yet."""
    charge_id = fake_stripe.register_failure(
        "in_race",
        decline_code="do_not_honor",
        network_decline_code="05",
        network_advice_code="02",
        brand="mastercard",
        created=NOW + 3600,
    )

    result = stripe_gateway.latest_failure(invoice_id="in_race")

    assert result.found is True
    assert (result.decline_code, result.network_decline_code) == ("do_not_honor", "05")
    assert result.network_advice_code == "02"
    assert result.card_brand == "mastercard"
    assert result.charge_id == charge_id
    assert result.attempted_at == datetime(2025, 11, 24, 17, 0, tzinfo=UTC)  # NOW + 1 h
    assert not fake_stripe.requests_to("POST", "/v1/invoices/in_race/pay")


def test_lookup_reads_the_older_invoice_shape_on_older_api_versions(fake_stripe):
    """Before 2025-03-31 an invoice carries `charge` and `payment_intent` itself."""
    legacy = StripeGateway(
        API_KEY, fake_stripe.url, timeout_seconds=5, api_version=LEGACY_API_VERSION
    )
    charge_id = fake_stripe.register_failure(
        "in_old", decline_code="insufficient_funds", network_decline_code="51", brand="amex"
    )

    result = legacy.latest_failure(invoice_id="in_old")

    [request] = fake_stripe.requests_to("GET", "/v1/invoices/in_old")
    assert request.header("Stripe-Version") == LEGACY_API_VERSION
    assert expansions(request) == set(FAILURE_EXPAND_BEFORE_PAYMENTS)
    assert (result.found, result.decline_code, result.network_decline_code) == (
        True,
        "insufficient_funds",
        "51",
    )
    assert (result.charge_id, result.payment_intent_id, result.card_brand) == (
        charge_id,
        "pi_for_in_old",
        "amex",
    )


def test_fake_refuses_expansions_of_the_other_invoice_shape(fake_stripe):
    """As Stripe does: so the gateway's expansions are checked against the version it sends."""
    legacy = StripeGateway(
        API_KEY, fake_stripe.url, timeout_seconds=5, api_version=LEGACY_API_VERSION
    )
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        legacy._client.v1.invoices.retrieve("in_x", params={"expand": ["payments"]})


def test_lookup_reports_the_latest_of_several_attempts(fake_stripe, stripe_gateway):
    fake_stripe.script("in_two", [Decline("insufficient_funds"), Decline("expired_card")])
    stripe_gateway.pay_invoice(invoice_id="in_two", idempotency_key="a-1")
    stripe_gateway.pay_invoice(invoice_id="in_two", idempotency_key="a-2")

    result = stripe_gateway.latest_failure(invoice_id="in_two")

    assert result.decline_code == "expired_card"
    assert result.charge_id == fake_stripe.charges["in_two"][1]
    assert result.attempted_at == datetime.fromtimestamp(NOW + 2, UTC)


@pytest.mark.parametrize(
    ("code", "expected_decline_code"),
    [
        ("expired_card", "expired_card"),
        ("invoice_payment_intent_requires_action", "authentication_required"),
    ],
)
def test_error_code_without_decline_code_classifies_as_a_payment_does(
    fake_stripe, stripe_gateway, code, expected_decline_code
):
    declined_once(fake_stripe, stripe_gateway, "in_code", Decline(None, code=code))

    result = stripe_gateway.latest_failure(invoice_id="in_code")

    assert (result.found, result.failure_code) == (True, code)
    assert result.decline_code == expected_decline_code
    assert expected_decline_code in DECLINE_CLASSES


def test_paid_invoice_has_no_failure_to_report(fake_stripe, stripe_gateway):
    fake_stripe.script("in_paid", [Decline("insufficient_funds"), Ok()])
    stripe_gateway.pay_invoice(invoice_id="in_paid", idempotency_key="a-1")
    stripe_gateway.pay_invoice(invoice_id="in_paid", idempotency_key="a-2")

    result = stripe_gateway.latest_failure(invoice_id="in_paid")

    assert (result.found, result.outcome, result.decline_code) == (False, "succeeded", "")
    assert result.charge_id == fake_stripe.charges["in_paid"][1]


def test_invoice_not_yet_attempted_has_nothing_found(fake_stripe, stripe_gateway):
    fake_stripe.invoice_status["in_new"] = "open"

    result = stripe_gateway.latest_failure(invoice_id="in_new")

    assert (result.found, result.outcome, result.retryable_error) == (False, "", False)


def test_unreachable_stripe_means_ask_again_later():
    gw = StripeGateway(API_KEY, "http://127.0.0.1:9", timeout_seconds=0.5)

    result = gw.latest_failure(invoice_id="in_x")

    assert (result.found, result.retryable_error) == (False, True)
    assert "could not reach Stripe" in result.message


def test_refused_lookup_is_final(fake_stripe):
    gw = StripeGateway("sk_test_wrong", fake_stripe.url, timeout_seconds=5)

    result = gw.latest_failure(invoice_id="in_x")

    assert (result.found, result.retryable_error) == (False, False)


def test_lookup_logs_codes_never_card_data(fake_stripe, stripe_gateway, caplog):
    declined_once(fake_stripe, stripe_gateway, "in_log", Decline("insufficient_funds"))

    with caplog.at_level(logging.INFO, logger="billing_events.gateway"):
        stripe_gateway.latest_failure(invoice_id="in_log")

    [line] = [
        r.getMessage()
        for r in caplog.records
        if r.name == "billing_events.gateway" and "latest_failure" in r.getMessage()
    ]
    assert "invoice=in_log" in line and "decline_code=insufficient_funds" in line
    assert "4242" not in line and "AOB934RVNwzk6xtn" not in line
    assert API_KEY not in caplog.text


def test_lookup_as_dict_is_json_safe():
    lookup = FailureLookup(
        found=True,
        outcome="failed",
        decline_code="insufficient_funds",
        card_brand="visa",
        attempted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )

    data = json.loads(json.dumps(failure_lookup_as_dict(lookup)))

    assert data["attempted_at"] == "2026-01-02T03:04:05+00:00"
    assert datetime.fromisoformat(data["attempted_at"]) == lookup.attempted_at
    assert (data["found"], data["decline_code"], data["network_decline_code"]) == (
        True,
        "insufficient_funds",
        "",
    )
    assert set(data) == set(FailureLookup.__dataclass_fields__)


# --- reading the invoice: plain values ---------------------------------------------------


def _payments(payment: dict) -> dict:
    return {"status": "open", "payments": {"data": [{"created": NOW, "payment": payment}]}}


@pytest.mark.parametrize(
    ("invoice", "expected"),
    [
        pytest.param(
            _payments(
                {
                    "type": "payment_intent",
                    "payment_intent": {
                        "id": "pi_1",
                        "status": "requires_payment_method",
                        "latest_charge": "ch_1",  # not expanded
                        "last_payment_error": {
                            "code": "card_declined",
                            "decline_code": "lost_card",
                            "payment_method": {"id": "pm_1", "card": {"brand": "Visa"}},
                        },
                    },
                }
            ),
            {
                "found": True,
                "decline_code": "lost_card",
                "charge_id": "ch_1",
                "card_brand": "visa",
                "payment_method": "pm_1",
                "attempted_at": None,
            },
            id="intent error only",
        ),
        pytest.param(
            _payments({"type": "payment_intent", "payment_intent": "pi_2"}),
            {"found": False, "outcome": "", "payment_intent_id": "pi_2"},
            id="intent not expanded",
        ),
        pytest.param(
            {
                "status": "open",
                "charge": {
                    "id": "ch_3",
                    "status": "failed",
                    "failure_code": "card_declined",
                    "outcome": {"reason": "generic_decline"},
                    "created": NOW,
                },
                "payment_intent": "pi_3",
            },
            {"found": True, "decline_code": "generic_decline", "payment_intent_id": "pi_3"},
            id="older shape",
        ),
        pytest.param(
            {"status": "open", "charge": {"id": "ch_4", "status": "pending"}},
            {"found": False, "outcome": ""},
            id="still processing",
        ),
        pytest.param(
            {"status": "paid", "payments": {"data": []}},
            {"found": False, "outcome": "succeeded"},
            id="paid without payments listed",
        ),
    ],
)
def test_failure_from_invoice(invoice, expected):
    result = failure_from_invoice(invoice)

    assert {name: getattr(result, name) for name in expected} == expected


# --- the simulated gateway ---------------------------------------------------------------


def test_simulated_lookup_answers_the_script_else_not_found():
    sim = SimulatedGateway()
    scripted = FailureLookup(
        found=True, outcome="failed", decline_code="stolen_card", card_brand="visa"
    )
    sim.script_failure("in_s", scripted)

    assert sim.latest_failure(invoice_id="in_s") == scripted
    other = sim.latest_failure(invoice_id="in_other")
    assert (other.found, other.retryable_error, other.outcome) == (False, False, "")
    assert [call[:2] for call in sim.calls] == [
        ("latest_failure", "in_s"),
        ("latest_failure", "in_other"),
    ]
