"""After a fault: a side effect whose message or worker was lost runs again within about a
minute, and a task retried after a database fault finishes what the first try began."""

from datetime import timedelta

import pytest

from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import outbox
from dunning import test_clock as clock_service
from dunning.models import Decision, OutboxItem
from dunning.tasks import run_outbox_item
from tests.dunning_helpers import deliver_now

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


def a_due_retry(sender) -> int:
    cus = StripeCustomer()
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    clock_service._set(clock.now() + DAY)  # the first retry is due, not run yet
    return OutboxItem.objects.get(kind="payment_retry", status="pending").pk


@pytest.mark.parametrize(
    "seconds_later, claimed_again",
    [(0, False), (30, False), (55, False), (61, True), (90, True)],
)
def test_an_item_whose_message_was_lost_is_claimed_again_within_about_a_minute(
    stripe_sender, test_clock, seconds_later, claimed_again
):
    item_id = a_due_retry(stripe_sender)
    assert item_id in outbox.claim_due()  # handed out; the broker then loses the message

    clock_service._set(clock.now() + timedelta(seconds=seconds_later))

    assert (item_id in outbox.claim_due()) is claimed_again


def test_the_lost_item_then_runs_once_with_the_same_key(
    stripe_sender, test_clock, simulated_gateway
):
    item_id = a_due_retry(stripe_sender)
    outbox.claim_due()
    clock_service._set(clock.now() + timedelta(seconds=65))

    outbox.drain()

    item = OutboxItem.objects.get(pk=item_id)
    assert item.status == "done"
    assert [c[2] for c in simulated_gateway.calls if c[0] == "pay_invoice"] == [item.key]


def test_a_retried_task_hands_back_what_the_first_try_closed(stripe_sender, test_clock):
    """The first try closed the item, then its database connection died before the engine
    saw the result: the task's retry must still hand the account back."""
    item_id = a_due_retry(stripe_sender)
    OutboxItem.objects.filter(pk=item_id).update(
        status="done", completed_at=clock.now(), attempts=1
    )
    account_id = OutboxItem.objects.get(pk=item_id).account_id

    run_outbox_item.apply(args=[item_id], retries=1)

    assert Decision.objects.filter(account_id=account_id, trigger="RETRY_RESULT").exists()


def test_a_first_try_does_not_hand_back_an_item_closed_elsewhere(stripe_sender, test_clock):
    item_id = a_due_retry(stripe_sender)
    OutboxItem.objects.filter(pk=item_id).update(status="superseded", completed_at=clock.now())
    assert run_outbox_item.apply(args=[item_id]).get() == "skipped"

    account_id = OutboxItem.objects.get(pk=item_id).account_id
    assert not Decision.objects.filter(account_id=account_id, trigger="RETRY_RESULT").exists()


def test_run_outbox_item_retries_on_database_errors():
    from django.db import DatabaseError, OperationalError

    assert issubclass(OperationalError, DatabaseError)
    assert DatabaseError in run_outbox_item.autoretry_for
    assert run_outbox_item.max_retries >= 5
