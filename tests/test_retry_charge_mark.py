"""A worker begins a retry in one statement: its lease renewed while still its own and,
under the account lock, the item, still pending, marked as charging. A recompute
supersedes any pending retry its plan no longer holds unless so marked, so an unmarked
pending retry is the current plan; the plan is computed afresh only when a charge of the
item began before, or the case has a review due."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from billing_events.gateway.results import succeeded
from billing_events.models import Account
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import engine, outbox
from dunning.effects import payment_retry
from dunning.models import DunningCase, OutboxItem, TestClock
from dunning.outbox_begin import begin
from dunning.outbox_items import CHARGING, LEASE
from tests.dunning_helpers import case_of, deliver_now

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


def set_clock(now):
    """Move the clock without running what became due (a stalled worker's view)."""
    TestClock.objects.filter(pk=TestClock.SINGLETON).update(now=now)


def a_claimed_retry(sender, cus) -> OutboxItem:
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    set_clock(clock.now() + DAY)  # due, not run
    [item] = OutboxItem.objects.filter(
        pk__in=outbox.claim_due(), kind=OutboxItem.Kind.PAYMENT_RETRY
    )
    return item


def begins_charge(item: OutboxItem) -> bool:
    """What a worker does before the network call: begin the item, then the last check."""
    begun = begin(item.pk, now=clock.now())
    return begun is not None and payment_retry.still_wanted(begun)


def fraud_decline(sender, cus):
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_2", decline_code="fraudulent"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=2),
    )


def test_the_lease_the_mark_and_the_check_before_the_charge_are_one_statement(
    stripe_sender, test_clock, simulated_gateway, monkeypatch
):
    item = a_claimed_retry(stripe_sender, StripeCustomer())
    monkeypatch.setattr(engine, "retry_still_planned", lambda **kw: pytest.fail("full check"))

    with CaptureQueriesContext(connection) as captured:
        assert begins_charge(item)

    statements = [
        q["sql"] for q in captured.captured_queries if "dunning_testclock" not in q["sql"]
    ]
    # One statement, prepared once per session (`core.prepared`): a later begin only
    # EXECUTEs it.
    assert [s.split()[:2] for s in statements] == [["EXECUTE", "dunning_outbox_begin"]]
    marked = OutboxItem.objects.get(pk=item.pk)
    assert marked.payload[CHARGING] == 1 and marked.claimed_until > clock.now()


def test_a_claimed_retry_is_superseded_by_a_plan_that_drops_it(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    item = a_claimed_retry(stripe_sender, cus)

    fraud_decline(stripe_sender, cus)  # the recompute replaces the plan at once

    assert OutboxItem.objects.get(pk=item.pk).status == "superseded"
    assert not begins_charge(item)
    assert outbox.run_items([item.pk]) == ["skipped"]
    assert outbox.run_item(item_id=item.pk) == "skipped"
    assert simulated_gateway.calls == []


def test_a_retry_whose_charge_began_is_left_to_its_worker(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    item = a_claimed_retry(stripe_sender, cus)
    assert begins_charge(item)  # the charge begins

    fraud_decline(stripe_sender, cus)  # arrives while the charge is at Stripe

    assert OutboxItem.objects.get(pk=item.pk).status == "pending"
    assert case_of(cus).decline_class == "fraud"


def test_a_charge_begun_before_is_checked_against_a_fresh_plan(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    item = a_claimed_retry(stripe_sender, cus)
    assert begins_charge(item)  # the charge begins, then its worker dies
    fraud_decline(stripe_sender, cus)  # kept: the charge had begun
    set_clock(clock.now() + LEASE + timedelta(seconds=1))

    assert item.pk in outbox.claim_due()
    assert outbox.run_item(item_id=item.pk) == "superseded"
    assert simulated_gateway.calls == []


def test_a_case_with_a_review_due_is_checked_against_a_fresh_plan(
    stripe_sender, test_clock, simulated_gateway, monkeypatch
):
    cus = StripeCustomer()
    item = a_claimed_retry(stripe_sender, cus)
    DunningCase.objects.filter(pk=case_of(cus).pk).update(next_review_at=clock.now())
    asked = []
    monkeypatch.setattr(engine, "retry_still_planned", lambda **kw: asked.append(kw) or False)

    assert not begins_charge(item)
    assert len(asked) == 1


@pytest.mark.django_db(transaction=True)
def test_the_mark_waits_for_a_recompute_holding_the_account(
    stripe_sender, test_clock, simulated_gateway
):
    """Lock order account, then item: the mark waits for the account, so a recompute that
    holds it either superseded the item first or sees the mark."""
    cus = StripeCustomer()
    item = a_claimed_retry(stripe_sender, cus)
    account_id = Account.objects.get(stripe_customer_id=cus.id).pk
    marked, answers = threading.Event(), []

    def mark():
        try:
            answers.append(begins_charge(item))
            marked.set()
        finally:
            connections.close_all()

    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(
            "SELECT id FROM billing_events_account WHERE id = %s FOR UPDATE", [account_id]
        )
        worker = threading.Thread(target=mark)
        worker.start()
        assert not marked.wait(0.5)  # waiting for the account
        cursor.execute(
            "UPDATE dunning_outboxitem SET status = 'superseded' WHERE id = %s", [item.pk]
        )
        cursor.execute("COMMIT")
    worker.join(10)

    assert answers == [False]
    item = OutboxItem.objects.get(pk=item.pk)
    assert item.status == "superseded" and CHARGING not in item.payload


def test_a_retry_whose_lease_ran_out_is_not_begun_by_its_late_worker(
    stripe_sender, test_clock, simulated_gateway
):
    """Another worker may hold it now: the late one neither marks nor charges."""
    item = a_claimed_retry(stripe_sender, StripeCustomer())
    set_clock(clock.now() + LEASE + timedelta(seconds=1))

    assert outbox.run_items([item.pk]) == ["skipped"]
    item = OutboxItem.objects.get(pk=item.pk)
    assert item.status == "pending" and CHARGING not in item.payload
    assert simulated_gateway.calls == []


@pytest.mark.django_db(transaction=True)
def test_the_close_waits_for_the_account_before_it_takes_the_item(
    stripe_sender, test_clock, simulated_gateway, monkeypatch
):
    """The closing UPDATE locks the account in its own subquery before it takes the item's
    row: a recompute that holds the account and then writes the item is waited for, never
    deadlocked with (had the close taken the item first, the two would wait on each other)."""
    cus = StripeCustomer()
    item = a_claimed_retry(stripe_sender, cus)
    account_id = Account.objects.get(stripe_customer_id=cus.id).pk
    at_stripe, let_answer, closed = threading.Event(), threading.Event(), threading.Event()
    answers, errors = [], []

    def slow_stripe(invoice_id, attempt):
        at_stripe.set()
        let_answer.wait(10)
        return succeeded()

    monkeypatch.setattr(simulated_gateway, "decide", slow_stripe)

    def run() -> None:
        try:
            answers.append(outbox.run_item(item_id=item.pk))
        except Exception as error:  # noqa: BLE001 - the test reports it
            errors.append(error)
        finally:
            closed.set()
            connections.close_all()

    worker = threading.Thread(target=run)
    worker.start()
    assert at_stripe.wait(10)  # begun and marked; the charge is at Stripe, no lock held
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(
            "SELECT id FROM billing_events_account WHERE id = %s FOR UPDATE", [account_id]
        )
        let_answer.set()
        assert not closed.wait(0.5)  # the close waits for the account
        cursor.execute(
            "UPDATE dunning_outboxitem SET status = 'superseded' WHERE id = %s", [item.pk]
        )
        cursor.execute("COMMIT")
    worker.join(10)

    assert errors == [] and answers == ["superseded"]
