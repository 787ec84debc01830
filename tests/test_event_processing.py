from datetime import UTC, datetime

import pytest

from billing_events.models import Account, Invoice, PaymentAttempt, Subscription, WebhookEvent
from dunning.intake.processing import process_event
from tests.events import Customer, deliver

pytestmark = pytest.mark.django_db


def at(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


@pytest.mark.parametrize(
    "type, status",
    [
        ("invoice.payment_failed", "open"),
        ("invoice.finalized", "open"),
        ("invoice.updated", "open"),
        ("invoice.paid", "paid"),
        ("invoice.payment_succeeded", "paid"),
        ("invoice.marked_uncollectible", "uncollectible"),
        ("invoice.voided", "void"),
    ],
)
def test_invoice_events_fill_the_invoice_mirror(stripe_sender, type, status):
    cus = Customer()
    event = cus.invoice_event(
        type,
        status=status,
        amount_due=4900,
        currency="eur",
        attempt_count=2,
        billing_reason="subscription_update",
    )

    assert deliver(stripe_sender, event) == ["processed"]

    invoice = Invoice.objects.get(stripe_invoice_id=cus.invoice_id)
    assert invoice.account.stripe_customer_id == cus.id
    assert (invoice.status, invoice.amount_due, invoice.currency) == (status, 4900, "eur")
    assert (invoice.billing_reason, invoice.attempt_count) == ("subscription_update", 2)
    assert invoice.stripe_subscription_id == cus.subscription
    assert invoice.finalized_at == at(cus.t)
    timestamps = {
        "paid": "paid_at",
        "void": "voided_at",
        "uncollectible": "marked_uncollectible_at",
    }
    if status in timestamps:
        assert getattr(invoice, timestamps[status]) == at(cus.t)
    assert WebhookEvent.objects.get().account == invoice.account


def test_paid_out_of_band_is_kept(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, cus.invoice_event("invoice.paid", status="paid", paid_out_of_band=True))

    assert Invoice.objects.get().paid_out_of_band is True


def test_charge_failed_records_the_decline_and_network_advice(stripe_sender):
    cus = Customer()
    event = cus.charge_event(
        "charge.failed",
        "ch_1",
        decline_code="insufficient_funds",
        advice_code="try_again_later",
        network_advice_code="01",
        network_decline_code="51",
    )

    deliver(stripe_sender, event)

    attempt = PaymentAttempt.objects.get()
    assert attempt.outcome == "failed"
    assert (attempt.decline_code, attempt.failure_code) == ("insufficient_funds", "card_declined")
    assert (attempt.advice_code, attempt.network_advice_code, attempt.network_decline_code) == (
        "try_again_later",
        "01",
        "51",
    )
    assert attempt.stripe_invoice_id == cus.invoice_id


def test_charge_succeeded_records_a_successful_attempt(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, cus.charge_event("charge.succeeded", "ch_ok", status="succeeded"))

    attempt = PaymentAttempt.objects.get()
    assert (attempt.outcome, attempt.decline_code) == ("succeeded", "")


def test_payment_intent_failure_and_charge_failure_describe_one_attempt(stripe_sender):
    cus = Customer()
    pi = cus.payment_intent_failed("pi_1", "ch_1", decline_code="expired_card")
    charge = cus.charge_event(
        "charge.failed", "ch_1", decline_code="expired_card", payment_intent="pi_1"
    )

    deliver(stripe_sender, pi, charge)

    attempt = PaymentAttempt.objects.get()
    assert (attempt.attempt_key, attempt.stripe_payment_intent_id) == ("ch_1", "pi_1")
    assert attempt.decline_code == "expired_card"


def test_attempt_that_arrives_before_its_invoice_is_linked_when_the_invoice_comes(stripe_sender):
    cus = Customer()
    charge = cus.charge_event("charge.failed", "ch_1", decline_code="do_not_honor")
    invoice = cus.invoice_event("invoice.payment_failed", attempt_count=1)

    deliver(stripe_sender, charge, invoice)

    assert PaymentAttempt.objects.get().invoice == Invoice.objects.get()


@pytest.mark.parametrize(
    "type, status",
    [
        ("customer.subscription.created", "active"),
        ("customer.subscription.updated", "past_due"),
        ("customer.subscription.deleted", "canceled"),
    ],
)
def test_subscription_events_fill_the_subscription_mirror(stripe_sender, type, status):
    cus = Customer()
    deliver(stripe_sender, cus.subscription_event(type, status=status))

    subscription = Subscription.objects.get()
    assert (subscription.stripe_subscription_id, subscription.status) == (cus.subscription, status)
    assert subscription.price_ids  # the sample's plan/price ids are kept


def test_customer_updated_with_a_new_default_card_marks_a_payment_method_update(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, cus.customer_updated("pm_new"))

    account = Account.objects.get()
    assert account.default_payment_method == "pm_new"
    assert account.payment_method_updated_at == at(cus.t)


@pytest.mark.parametrize(
    ("type", "previous"),
    [
        ("payment_method.attached", None),
        ("payment_method.updated", {"card": {"exp_month": 8, "exp_year": 2026}}),
        ("payment_method.updated", {"card": {"last4": "4242"}}),
    ],
)
def test_a_new_card_or_new_card_details_mark_a_payment_method_update(stripe_sender, type, previous):
    cus = Customer()
    deliver(stripe_sender, cus.payment_method_event(type, "pm_2", previous))

    assert Account.objects.get().payment_method_updated_at == at(cus.t)


@pytest.mark.parametrize("previous", [None, {"billing_details": {"address": {"city": "Old"}}}])
def test_an_update_that_leaves_the_card_as_it_was_is_not_a_card_change(stripe_sender, previous):
    cus = Customer()
    deliver(stripe_sender, cus.payment_method_event("payment_method.updated", "pm_2", previous))

    assert Account.objects.get().payment_method_updated_at is None


def test_expiring_source_records_when_the_card_stops_working(stripe_sender):
    cus = Customer()
    deliver(stripe_sender, cus.source_expiring(exp_month=12, exp_year=2026))

    assert Account.objects.get().card_expiring_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_an_older_event_never_overwrites_newer_state(stripe_sender):
    cus = Customer()
    failed = cus.invoice_event("invoice.payment_failed", attempt_count=1, amount_due=2000)
    cus.tick(3600)
    paid = cus.invoice_event("invoice.paid", status="paid", attempt_count=2, amount_due=2000)

    deliver(stripe_sender, paid, failed)  # arrival order reversed

    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.attempt_count, invoice.amount_remaining) == ("paid", 2, 0)
    assert invoice.version_event_id == paid["id"]


def test_same_second_events_order_by_status_not_arrival(stripe_sender):
    cus = Customer()
    finalized = cus.invoice_event("invoice.finalized")
    paid = cus.invoice_event("invoice.paid", status="paid")  # same Stripe second

    deliver(stripe_sender, paid, finalized)

    invoice = Invoice.objects.get()
    assert (invoice.status, invoice.amount_paid, invoice.amount_remaining) == ("paid", 2000, 0)


def test_a_cancelled_subscription_stays_cancelled_when_a_late_update_arrives(stripe_sender):
    cus = Customer()
    updated = cus.subscription_event("customer.subscription.updated", status="past_due")
    cus.tick()
    deleted = cus.subscription_event("customer.subscription.deleted", status="canceled")

    deliver(stripe_sender, deleted, updated)

    assert Subscription.objects.get().status == "canceled"


def test_reprocessing_a_processed_event_changes_nothing(stripe_sender):
    cus = Customer()
    event = cus.invoice_event("invoice.payment_failed", attempt_count=1)
    deliver(stripe_sender, event)
    before = list(Invoice.objects.values())

    stored = WebhookEvent.objects.get()
    assert process_event(event_id=stored.pk) == "skipped"
    assert list(Invoice.objects.values()) == before
