"""The backtest walk's probe (`simulation/due.py`) says something is due whenever
`test_clock.run_due` has work: the walk skips `run_due` when the probe says nothing is due,
so a probe that missed due work would leave an event, a review or a retry unrun and change
the report. Its superset (an item due but leased) is safe: at worst one idle `run_due`."""

import itertools
from datetime import timedelta

import pytest

from billing_events.models import Account, WebhookEvent
from dunning import outbox
from dunning.intake.processing import due_events
from dunning.models import DunningCase, OutboxItem
from dunning.schedule import due_reviews
from simulation.due import Probe

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)
_ids = itertools.count(1)


def event(now, status: str, due_in: timedelta) -> None:
    WebhookEvent.objects.create(
        stripe_event_id=f"evt_due_{next(_ids)}",
        type="invoice.payment_failed",
        payload={},
        stripe_created=now - 2 * HOUR,
        received_at=now - 2 * HOUR,
        status=status,
        next_attempt_at=now + due_in,
    )


def case(now, state: str, review_in: timedelta | None) -> None:
    DunningCase.objects.create(
        account=Account.objects.create(stripe_customer_id=f"cus_due_{next(_ids)}"),
        state=state,
        opened_at=now - 24 * HOUR,
        policy_version="test",
        next_review_at=review_in and now + review_in,
    )


def item(now, status: str, due_in: timedelta, leased_for: timedelta | None = None) -> None:
    OutboxItem.objects.create(
        account=Account.objects.create(stripe_customer_id=f"cus_due_{next(_ids)}"),
        kind=OutboxItem.Kind.PAYMENT_RETRY,
        key=f"retry:due:{next(_ids)}",
        payload={},
        status=status,
        next_attempt_at=now + due_in,
        claimed_until=leased_for and now + leased_for,
        created_at=now - 24 * HOUR,
    )


# (what is in the stores, due now by the probe, the next review or item after now)
STORES = [
    ("nothing", [], False, None),
    ("an event received, due", [lambda now: event(now, "received", -HOUR)], True, None),
    (
        "an event failed, due again now",
        [lambda now: event(now, "failed", timedelta(0))],
        True,
        None,
    ),
    ("an event processed", [lambda now: event(now, "processed", -HOUR)], False, None),
    ("an event due later", [lambda now: event(now, "received", HOUR)], False, None),
    ("a review due", [lambda now: case(now, "retrying", -HOUR)], True, None),
    ("a review later", [lambda now: case(now, "retrying", 2 * HOUR)], False, 2 * HOUR),
    ("a resolved case's old review", [lambda now: case(now, "resolved", -HOUR)], False, None),
    ("a case with no review", [lambda now: case(now, "escalated", None)], False, None),
    ("a retry due", [lambda now: item(now, "pending", -HOUR)], True, None),
    ("a retry due, leased (superset)", [lambda now: item(now, "pending", -HOUR, HOUR)], True, None),
    ("a retry done", [lambda now: item(now, "done", -HOUR)], False, None),
    ("a retry later", [lambda now: item(now, "pending", 3 * HOUR)], False, 3 * HOUR),
    (
        "the next of a review and a retry",
        [lambda now: case(now, "retrying", 5 * HOUR), lambda now: item(now, "pending", 4 * HOUR)],
        False,
        4 * HOUR,
    ),
]


@pytest.mark.parametrize(("name", "makers", "due_now", "next_in"), STORES, ids=lambda v: v)
def test_the_probe_sees_whatever_run_due_would_act_on(test_clock, name, makers, due_now, next_in):
    now = test_clock
    for make in makers:
        make(now)

    found = Probe().at(now)

    # What `run_due` acts on: `due_event_ids`, `recompute_due_cases`, the outbox's claim.
    run_due_acts = (
        due_events(now).exists() or due_reviews(now).exists() or outbox.QUEUE.due(now).exists()
    )
    assert found.now == due_now, name
    assert found.now or not run_due_acts, name  # never skips work run_due would do
    assert found.next == (now + next_in if next_in else None), name
