"""Advancing the shared test clock, and running what became due on the way.

Like a Stripe test clock: the call returns once everything due up to the new time has
run. It walks from due moment to due moment, so a ladder step due on day 7 is decided
on day 7 even when the clock jumps 30 days.

With the real processes running, the advance owns the clock while it walks: it holds a
PostgreSQL advisory lock, and beat's periodic work (outbox dispatch, the webhook pump, case
reviews, drift, stuck re-drive) stands aside while it is held (`advance_in_progress`).
Items a worker had already taken before the advance began are waited for (bounded), so
nothing due on day 1 is run by a worker on day 7 with the clock that day says.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Min

from billing_events import polling
from billing_events.models import WebhookEvent
from core import clock
from dunning import outbox, schedule
from dunning.intake.processing import PENDING, due_event_ids, process_event
from dunning.models import OPEN_STATES, DunningCase, OutboxItem, TestClock

# An arbitrary constant naming the advisory lock an advance holds (PostgreSQL only).
ADVANCE_LOCK = 0x7E57C10C
# How long an advance waits, in real seconds, for items workers took before it began.
IN_FLIGHT_WAIT_SECONDS = 30.0


class TestClockError(ValueError):
    """The request cannot be honoured; the message says why."""


@dataclass
class AdvanceReport:
    previous: datetime
    now: datetime
    ran: dict[str, int] = field(
        default_factory=lambda: {
            "webhook_events": 0,
            "case_reviews": 0,
            "outbox_items": 0,
            "recovered_events": 0,  # stored by the polling backstop
        }
    )


def _next_due_after(moment: datetime) -> datetime | None:
    candidates = [
        DunningCase.objects.filter(state__in=OPEN_STATES, next_review_at__gt=moment).aggregate(
            at=Min("next_review_at")
        )["at"],
        OutboxItem.objects.filter(
            status=OutboxItem.Status.PENDING, next_attempt_at__gt=moment
        ).aggregate(at=Min("next_attempt_at"))["at"],
        WebhookEvent.objects.filter(status__in=PENDING, next_attempt_at__gt=moment).aggregate(
            at=Min("next_attempt_at")
        )["at"],
    ]
    due = [at for at in candidates if at is not None]
    return min(due) if due else None


def _set(now: datetime) -> None:
    TestClock.objects.update_or_create(pk=TestClock.SINGLETON, defaults={"now": now})


def _postgres() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def _holding_the_clock() -> Iterator[None]:
    """One advance at a time, and beat stands aside meanwhile. A session lock: it goes with
    the connection if the advancing process dies."""
    if not _postgres():  # the embedded default has no other process to keep out
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [ADVANCE_LOCK])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVANCE_LOCK])


def advance_in_progress() -> bool:
    """True while another session advances the test clock: periodic work must not run
    then, or it would run what is due at one moment of the walk at a later one. The
    advancing session itself is never kept out (its own lock does not conflict)."""
    if not settings.DUNNING_TEST_CLOCK or not _postgres():
        return False
    # One round trip: CASE evaluates its branch only after its condition, so the shared
    # lock, when taken, is given back in the same statement (every outbox kick asks).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CASE WHEN pg_try_advisory_lock_shared(%s)"
            " THEN pg_advisory_unlock_shared(%s) ELSE false END",
            [ADVANCE_LOCK, ADVANCE_LOCK],
        )
        free = cursor.fetchone()[0]
    return not free


def _settle_in_flight() -> None:
    """Wait for outbox items a worker holds (claimed before this advance began) to close;
    past the bound, take them back: their message may be lost, and the advance owns the
    clock now. Running one twice is safe (same idempotency key, status checked under lock)."""
    in_flight = OutboxItem.objects.filter(
        status=OutboxItem.Status.PENDING, claimed_until__isnull=False
    )
    deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
    while in_flight.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    in_flight.update(claimed_until=None)


def run_due(report: AdvanceReport) -> None:
    # The backstop first, so an event it recovers is processed in this same step.
    report.ran["recovered_events"] += polling.poll_once().recovered
    for event_id in due_event_ids(now=clock.now(), limit=10_000):
        process_event(event_id=event_id)
        report.ran["webhook_events"] += 1
    report.ran["case_reviews"] += schedule.recompute_due_cases()
    report.ran["outbox_items"] += outbox.drain()


def advance(*, to: datetime | None = None, seconds: float | None = None) -> AdvanceReport:
    if not settings.DUNNING_TEST_CLOCK:
        raise TestClockError("the test clock is off (set DUNNING_TEST_CLOCK=1)")
    if (to is None) == (seconds is None):
        raise TestClockError("give exactly one of 'to' or 'seconds'")
    with _holding_the_clock():  # read "now" under the lock: two advances never interleave
        previous = clock.now()
        target = to if to is not None else previous + timedelta(seconds=seconds)
        if target.tzinfo is None:
            raise TestClockError("'to' must carry a timezone (UTC)")
        if target < previous:
            raise TestClockError(
                f"the test clock only moves forward (it is {previous.isoformat()})"
            )
        report = AdvanceReport(previous=previous, now=target)
        _settle_in_flight()
        moment = previous
        _set(moment)
        run_due(report)
        while (due := _next_due_after(moment)) is not None and due <= target:
            moment = due
            _set(moment)
            run_due(report)
        _set(target)
        run_due(report)
    return report
