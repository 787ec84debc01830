"""Advancing the shared test clock, and running what became due on the way.

Like a Stripe test clock: the call returns once everything due up to the new time has
run. It walks from due moment to due moment, so a ladder step due on day 7 is decided
on day 7 even when the clock jumps 30 days.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Min

from billing_events import polling
from billing_events.models import WebhookEvent
from billing_events.processing import PENDING, due_event_ids, process_event
from dunning import clock, outbox, schedule
from dunning.models import OPEN_STATES, DunningCase, OutboxItem, TestClock


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
    previous = clock.now()
    target = to if to is not None else previous + timedelta(seconds=seconds)
    if target.tzinfo is None:
        raise TestClockError("'to' must carry a timezone (UTC)")
    if target < previous:
        raise TestClockError(f"the test clock only moves forward (it is {previous.isoformat()})")
    report = AdvanceReport(previous=previous, now=target)
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
