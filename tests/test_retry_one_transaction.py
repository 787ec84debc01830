"""A retry's result is recorded and the account recomputed in one transaction, in a
bounded number of statements (a real retry against the fake Stripe on loopback)."""

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from billing_events.models import PaymentAttempt
from billing_events.scenarios import StripeCustomer
from billing_events.services import RECORD_RETRY_PREPARED
from dunning import outbox
from dunning import test_clock as clock_service
from dunning.models import Decision, OutboxItem
from tests.dunning_helpers import deliver_now
from tests.fake_stripe import API_KEY, Decline

pytestmark = pytest.mark.django_db
# Before: 42 (record_retry_result in eight ORM statements, the recompute in a second
# transaction). The snapshot read twice (the last check before charging, then the
# recompute) was 20 of these. Then 21: the check before the charge one statement (the
# charge mark), the snapshot read once, for the recompute (10 of the 21). Now 9 (inside
# the test's transaction, so without BEGIN and COMMIT): the lease, the mark and the check
# in one statement, the account lock in the close, the snapshot in one statement, the case
# written without reading it again; a decline's decision, case, superseded and new retry.
MAX_STATEMENTS = 9


def a_due_retry(sender, settings, fake_stripe) -> OutboxItem:
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake_stripe.url
    cus = StripeCustomer()
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_first", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    fake_stripe.script(cus.invoice_id, [Decline("insufficient_funds")])
    item = OutboxItem.objects.get(kind="payment_retry", status="pending")
    clock_service._set(item.next_attempt_at)
    assert item.pk in outbox.claim_due()
    return item


def test_a_declined_retry_costs_a_bounded_number_of_statements(
    stripe_sender, test_clock, settings, fake_stripe
):
    item = a_due_retry(stripe_sender, settings, fake_stripe)

    with CaptureQueriesContext(connection) as captured:
        assert outbox.run_item(item_id=item.pk) == "done"

    statements = [
        q["sql"]
        for q in captured.captured_queries
        if "dunning_testclock" not in q["sql"] and "SAVEPOINT" not in q["sql"]
    ]
    # The record's one statement, prepared once per session: EXECUTE billing_record_retry.
    mirror_writes = [
        s
        for s in statements
        if RECORD_RETRY_PREPARED.name in s
        or ("billing_events_paymentattempt" in s and "INSERT" in s)
    ]
    assert len(mirror_writes) == 1  # attempt, invoice count: one statement
    assert len(statements) <= MAX_STATEMENTS, "\n".join(s[:80] for s in statements)
    assert Decision.objects.filter(trigger="RETRY_RESULT").count() == 1
    assert OutboxItem.objects.filter(kind="payment_retry", status="pending").count() == 1


def test_a_database_fault_in_the_recompute_leaves_the_result_unrecorded(
    stripe_sender, test_clock, settings, fake_stripe, monkeypatch
):
    item = a_due_retry(stripe_sender, settings, fake_stripe)
    attempts = PaymentAttempt.objects.count()

    def lost_connection(trigger, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(outbox, "recompute_within", lost_connection)
    with pytest.raises(OperationalError):
        outbox.run_item(item_id=item.pk)

    # Nothing half-done: the task's retry charges again under the same key (Stripe
    # replays the answer) and records it with the recompute.
    assert PaymentAttempt.objects.count() == attempts
    assert OutboxItem.objects.get(pk=item.pk).status == "pending"


def test_a_broken_recompute_leaves_the_item_closed_so_it_does_not_run_again(
    stripe_sender, test_clock, settings, fake_stripe, monkeypatch
):
    item = a_due_retry(stripe_sender, settings, fake_stripe)
    attempts = PaymentAttempt.objects.count()

    def bug(trigger, **kwargs):
        raise RuntimeError("a bug in the recompute")

    monkeypatch.setattr(outbox, "recompute_within", bug)
    assert outbox.run_item(item_id=item.pk) == "done"

    assert PaymentAttempt.objects.count() == attempts + 1


def test_a_recompute_that_breaks_after_writing_leaves_none_of_its_writes(
    stripe_sender, test_clock, settings, fake_stripe, monkeypatch
):
    """No savepoint sits between the close and the recompute: a recompute that wrote its
    decision and then broke is rolled back whole, and the close is made again without it."""
    item = a_due_retry(stripe_sender, settings, fake_stripe)
    attempts = PaymentAttempt.objects.count()
    decisions = Decision.objects.count()
    real = outbox.recompute_within

    def breaks_after_writing(trigger, **kwargs):
        assert real(trigger, **kwargs).decision_id is not None
        raise RuntimeError("a bug after the decision was written")

    monkeypatch.setattr(outbox, "recompute_within", breaks_after_writing)
    assert outbox.run_item(item_id=item.pk) == "done"

    assert Decision.objects.count() == decisions
    assert PaymentAttempt.objects.count() == attempts + 1
    assert OutboxItem.objects.get(pk=item.pk).status == "done"
