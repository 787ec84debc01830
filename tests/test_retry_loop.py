"""The retry loop by decline class, walked with the test clock over whole schedules."""

from datetime import timedelta

import pytest

from billing_events.gateway import declined, succeeded
from billing_events.models import PaymentAttempt
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import outbox
from dunning import test_clock as clock_service
from dunning.models import CaseState, OutboxItem
from dunning.policy import current_policy
from tests.dunning_helpers import case_of, deliver_now
from tests.fake_stripe import API_KEY, Decline, Ok

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


def first_failure(sender, cus, decline_code, **charge_fields):
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event(
            "charge.failed", "ch_first", decline_code=decline_code, **charge_fields
        ),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )


def advance(**delta):
    return clock_service.advance(seconds=timedelta(**delta).total_seconds())


def retry_days(gateway, start) -> list[float]:
    """Days after `start` at which the gateway was asked to pay, from the recorded attempts."""
    return [
        round((a.attempted_at - start) / DAY, 2)
        for a in PaymentAttempt.objects.filter(attempt_key__startswith="ch_sim_").order_by(
            "attempted_at"
        )
    ]


def test_soft_decline_is_retried_on_its_spaced_schedule_then_waits(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "insufficient_funds")

    advance(days=40)

    offsets = [d.days for d in current_policy().retries.schedules["soft"]]
    assert retry_days(simulated_gateway, test_clock) == offsets == [1, 3, 5, 8, 12, 17, 23]
    case = case_of(cus)
    assert case.state == CaseState.ESCALATED  # exhausted, and the ladder reached day 30
    assert "retries exhausted: 8 attempts" in str(case.last_decision.explanation)


def test_no_immediate_retry_after_a_failure(stripe_sender, test_clock, simulated_gateway):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "processing_error")

    advance(hours=23)

    assert simulated_gateway.calls == []
    assert case_of(cus).next_retry_at == test_clock + DAY


def test_soft_retry_that_succeeds_lifts_and_resolves_as_paid(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "insufficient_funds")
    simulated_gateway.script(cus.invoice_id, [declined("insufficient_funds"), succeeded()])

    advance(days=4)

    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", "paid")
    # nothing was imposed in 4 days (level notice), so there is nothing to lift
    assert [t.to_state for t in case.transitions.all()] == ["retrying", "resolved"]
    assert case.transitions.last().trigger == "RETRY_RESULT"


@pytest.mark.parametrize(
    "code", ["expired_card", "incorrect_cvc", "authentication_required", "stolen_card"]
)
def test_hard_fraud_and_auth_declines_are_not_retried_off_session(
    stripe_sender, test_clock, simulated_gateway, code
):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, code)

    advance(days=14)

    assert simulated_gateway.calls == []
    assert case_of(cus).state == CaseState.AWAITING_CUSTOMER


def test_a_card_update_after_a_hard_decline_triggers_an_immediate_retry(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "expired_card")
    advance(days=6)
    simulated_gateway.script(cus.invoice_id, [succeeded()])

    deliver_now(
        stripe_sender, cus, lambda c: c.payment_method_event("payment_method.attached", "pm_new")
    )

    assert [call[0] for call in simulated_gateway.calls] == ["pay_invoice"]
    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", "paid")
    assert (case.resolved_at - test_clock) == 6 * DAY  # the same moment, not the next beat


def test_fraud_decline_is_never_retried_even_after_a_card_update(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "fraudulent")
    deliver_now(stripe_sender, cus, lambda c: c.customer_updated("pm_other"))

    advance(days=10)

    assert simulated_gateway.calls == []


@pytest.mark.parametrize(
    "signal",
    [
        {"advice_code": "do_not_try_again"},
        # Mastercard merchant advice: do not try again
        {"network_advice_code": "03", "brand": "mastercard"},
        {"network_decline_code": "R1"},  # Visa category 1: issuer will never approve
    ],
)
def test_network_do_not_try_again_stops_retries_on_that_card(
    stripe_sender, test_clock, simulated_gateway, signal
):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "insufficient_funds", **signal)

    advance(days=10)

    assert simulated_gateway.calls == []
    assert case_of(cus).state == CaseState.AWAITING_CUSTOMER


def test_advice_try_again_later_keeps_a_soft_schedule(stripe_sender, test_clock, simulated_gateway):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "do_not_honor", advice_code="try_again_later")

    advance(days=2)

    assert len(simulated_gateway.calls) == 1


def test_visa_cap_of_20_attempts_per_card_in_30_days_counts_other_invoices(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    # 19 merchant attempts on this Visa card within the window (other invoices), then this
    # invoice's own failure: 20 in 30 days, the network's cap.
    builders = [
        (
            lambda c, n=n: c.charge_event(
                "charge.failed",
                f"ch_old_{n}",
                invoice_id=f"in_old_{n}",
                decline_code="insufficient_funds",
            )
        )
        for n in range(19)
    ]
    deliver_now(stripe_sender, cus, *builders)
    first_failure(stripe_sender, cus, "insufficient_funds")

    advance(days=5)

    assert simulated_gateway.calls == []
    assert "visa_30d" in str(case_of(cus).last_decision.explanation)


def test_a_card_update_on_a_capped_card_waits_for_the_network_window(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    builders = [
        (
            lambda c, n=n: c.charge_event(
                "charge.failed", f"ch_mc_{n}", decline_code="insufficient_funds", brand="mastercard"
            )
        )
        for n in range(9)
    ]
    deliver_now(stripe_sender, cus, *builders)
    first_failure(stripe_sender, cus, "insufficient_funds", brand="mastercard")
    advance(hours=1)
    deliver_now(
        stripe_sender, cus, lambda c: c.payment_method_event("payment_method.attached", "pm_2")
    )
    assert simulated_gateway.calls == []  # ten in 24 hours on this card: not now

    advance(days=1)
    assert len(simulated_gateway.calls) == 1


def test_two_dispatchers_never_claim_the_same_retry(
    stripe_sender, test_clock, simulated_gateway, django_db_blocker
):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "insufficient_funds")
    due = clock.now() + 2 * DAY
    OutboxItem.objects.filter(kind="payment_retry").update(next_attempt_at=clock.now())
    assert due  # the retry is due now

    first = outbox.claim_due()
    second = outbox.claim_due()

    assert len(first) == 1 and second == []


def test_a_retry_whose_worker_died_is_run_again_with_the_same_key(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "insufficient_funds")
    clock_service._set(clock.now() + DAY)
    # a worker claims it, then dies before reporting (a customer notice may be due too)
    [item_id] = OutboxItem.objects.filter(
        pk__in=outbox.claim_due(), kind=OutboxItem.Kind.PAYMENT_RETRY
    ).values_list("pk", flat=True)
    key = OutboxItem.objects.get(pk=item_id).key
    simulated_gateway.pay_invoice(invoice_id=cus.invoice_id, idempotency_key=key)  # it did call

    assert outbox.claim_due() == []  # leased: nobody else runs it meanwhile
    advance(minutes=6)  # the lease runs out; the item is run again

    pay_calls = [c for c in simulated_gateway.calls if c[0] == "pay_invoice"]
    assert [c[2] for c in pay_calls[:2]] == [key, key]
    assert simulated_gateway.attempts(cus.invoice_id) >= 1
    assert OutboxItem.objects.get(pk=item_id).status == "done"


def test_retries_go_to_stripe_through_the_sdk(stripe_sender, test_clock, settings, fake_stripe):
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake_stripe.url
    cus = StripeCustomer()
    first_failure(stripe_sender, cus, "insufficient_funds")
    fake_stripe.script(cus.invoice_id, [Decline("expired_card"), Ok()])

    advance(days=2)  # retry 1 on day 1: hard decline, so the case waits for the customer
    assert case_of(cus).state == CaseState.AWAITING_CUSTOMER
    deliver_now(stripe_sender, cus, lambda c: c.customer_updated("pm_new"))

    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", "paid")
    pays = [r for r in fake_stripe.requests if r.path.endswith("/pay")]
    assert len(pays) == 2
    assert all(r.form.get("off_session") == "true" for r in pays)
    keys = [r.header("Idempotency-Key") for r in pays]
    assert len(set(keys)) == 2 and all(k.startswith(f"retry:{cus.invoice_id}:") for k in keys)
    declined_attempt = PaymentAttempt.objects.get(decline_code="expired_card")
    assert declined_attempt.invoice.stripe_invoice_id == cus.invoice_id
