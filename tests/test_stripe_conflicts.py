"""Stripe Billing still retrying or cancelling while dunning owns both: the rules, the
gauge in /metrics and the admin filter."""

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from django.contrib.auth.models import User
from prometheus_client.parser import text_string_to_metric_families

from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from dunning.models import CaseInvoice, DunningCase, OutboxItem
from dunning.stripe_conflicts import (
    CANCELLED,
    RETRIED,
    InvoiceAttempts,
    SubscriptionEnd,
    cancelled_by_stripe,
    conflicted_cases,
    stripe_retries,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
_ids = count(1)


@pytest.mark.parametrize(
    "attempt_count, our_retries, foreign_failures, expected",
    [
        (0, 0, 0, 0),  # never attempted
        (1, 0, 1, 0),  # the first attempt failed: dunning's start, no conflict
        (1, 2, 1, 0),  # dunning retried twice; Stripe does not count manual attempts
        (3, 2, 1, 0),  # a Stripe that counts every attempt: all explained by ours
        (2, 0, 1, 1),  # Stripe retried once and no charge event came for it yet
        (4, 1, 1, 2),  # more attempts than the first and ours
        (1, 0, 3, 2),  # failed charges dunning did not make, beyond the first
        (1, 1, 2, 1),  # one of ours, and a second failure that is not
    ],
)
def test_retries_stripe_made_on_its_own(attempt_count, our_retries, foreign_failures, expected):
    attempts = InvoiceAttempts(attempt_count, our_retries, foreign_failures)
    assert stripe_retries(attempts) == expected


@pytest.mark.parametrize(
    "status, canceled_at, we_asked_at, expected",
    [
        ("active", None, None, False),
        ("canceled", T0 + HOUR, None, True),  # cancelled under the case, not by us
        ("canceled", T0 - HOUR, None, False),  # cancelled before the case opened
        ("canceled", T0 + 2 * HOUR, T0 + HOUR, False),  # dunning asked first
        ("canceled", T0 + HOUR, T0 + 2 * HOUR, True),  # Stripe was first; ours came later
        ("canceled", None, None, False),  # no time: nothing to compare
        ("past_due", T0 + HOUR, None, False),
    ],
)
def test_subscriptions_stripe_cancelled_on_its_own(status, canceled_at, we_asked_at, expected):
    end = SubscriptionEnd(status, canceled_at, case_opened_at=T0, we_asked_at=we_asked_at)
    assert cancelled_by_stripe(end) is expected


# --- against the stores ------------------------------------------------------------------


def open_case(*, attempt_count: int) -> tuple[DunningCase, Invoice]:
    n = next(_ids)
    account = Account.objects.create(stripe_customer_id=f"cus_conflict_{n}")
    invoice = Invoice.objects.create(
        stripe_invoice_id=f"in_conflict_{n}",
        account=account,
        stripe_subscription_id=f"sub_conflict_{n}",
        status="open",
        amount_due=4900,
        amount_remaining=4900,
        currency="usd",
        attempt_count=attempt_count,
        stripe_created=T0,
        version=T0,
        version_event_id="evt_x",
    )
    case = DunningCase.objects.create(
        account=account, state="retrying", opened_at=T0, policy_version="test"
    )
    CaseInvoice.objects.create(case=case, invoice=invoice)
    failed(invoice, f"ch_first_{n}")
    return case, invoice


def failed(invoice: Invoice, charge_id: str, **fields) -> PaymentAttempt:
    return PaymentAttempt.objects.create(
        attempt_key=fields.pop("attempt_key", charge_id),
        account=invoice.account,
        invoice=invoice,
        stripe_invoice_id=invoice.stripe_invoice_id,
        stripe_charge_id=charge_id,
        outcome="failed",
        amount=4900,
        currency="usd",
        decline_code="insufficient_funds",
        attempted_at=T0 + HOUR * next(_ids),
        **fields,
    )


def our_retry(invoice: Invoice, charge_id: str, outcome: str = "declined") -> None:
    OutboxItem.objects.create(
        account=invoice.account,
        kind=OutboxItem.Kind.PAYMENT_RETRY,
        key=f"retry:{invoice.stripe_invoice_id}:{next(_ids)}",
        payload={"stripe_invoice_id": invoice.stripe_invoice_id, "attempt_number": 2},
        status=OutboxItem.Status.DONE,
        result={"outcome": outcome, "charge_id": charge_id},
        next_attempt_at=T0,
        created_at=T0,
    )


def gauge(client) -> dict[str, float]:
    body = client.get("/metrics").content.decode()
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "dunning_stripe_conflict_cases"
    }


@pytest.mark.django_db
def test_stripe_retries_and_cancellations_are_counted_and_filtered(client):
    quiet, quiet_invoice = open_case(attempt_count=2)
    our_retry(quiet_invoice, "ch_ours")  # the second attempt was dunning's
    failed(quiet_invoice, "ch_ours")
    failed(quiet_invoice, "", attempt_key="attempt:retry:x", customer_initiated=False)

    retried, retried_invoice = open_case(attempt_count=1)
    failed(retried_invoice, "ch_smart_retry")  # a charge Stripe made between ours
    on_session, on_session_invoice = open_case(attempt_count=1)
    failed(on_session_invoice, "ch_customer", customer_initiated=True)  # the customer paid

    cancelled, _ = open_case(attempt_count=1)
    Subscription.objects.create(
        stripe_subscription_id="sub_cancelled_by_stripe",
        account=cancelled.account,
        status="canceled",
        canceled_at=T0 + HOUR,
        version=T0 + HOUR,
        version_event_id="evt_y",
    )
    ours_cancelled, _ = open_case(attempt_count=1)
    Subscription.objects.create(
        stripe_subscription_id="sub_cancelled_by_us",
        account=ours_cancelled.account,
        status="canceled",
        canceled_at=T0 + 2 * HOUR,
        version=T0 + 2 * HOUR,
        version_event_id="evt_z",
    )
    OutboxItem.objects.create(
        account=ours_cancelled.account,
        kind=OutboxItem.Kind.CANCEL_SUBSCRIPTION,
        key="cancel:sub_cancelled_by_us",
        payload={"subscription_id": "sub_cancelled_by_us"},
        status=OutboxItem.Status.DONE,
        next_attempt_at=T0 + HOUR,
        created_at=T0 + HOUR,
    )

    found = conflicted_cases()
    assert found[RETRIED] == {retried.pk: [retried_invoice.stripe_invoice_id]}
    assert found[CANCELLED] == {cancelled.pk: ["sub_cancelled_by_stripe"]}
    assert gauge(client) == {RETRIED: 1.0, CANCELLED: 1.0}

    admin = User.objects.create_superuser("ops", password="x")
    client.force_login(admin)
    listed = client.get("/admin/dunning/dunningcase/", {"stripe_conflict": "any"})
    assert listed.status_code == 200
    shown = {case.pk for case in listed.context["cl"].result_list}
    assert shown == {retried.pk, cancelled.pk}
    only_retried = client.get("/admin/dunning/dunningcase/", {"stripe_conflict": RETRIED})
    assert {case.pk for case in only_retried.context["cl"].result_list} == {retried.pk}
    assert quiet.pk not in shown and on_session.pk not in shown

    # Resolved cases are history: the gauge shows what needs a look now.
    DunningCase.objects.filter(pk__in=[retried.pk, cancelled.pk]).update(state="resolved")
    assert gauge(client) == {RETRIED: 0.0, CANCELLED: 0.0}
