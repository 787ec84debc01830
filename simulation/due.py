"""What the replay's walk needs to know about the scratch database at a moment, in one
statement: whether anything is due now (an event to process, a review, an outbox item),
whether an outbox item still carries a lease, and the next moment after now that a review,
an outbox item or an event's processing falls due.

`test_clock.run_due` costs three statements even when nothing is due (the events due, the
reviews due, the outbox claim), and a step of the walk ran it two or three times, mostly
with nothing due: about a third of a replay's statements (profiled on 300 accounts). With
"anything due now" known, the walk runs it only when it has something to do; when nothing
is due it does nothing at all, so the report stays the same.

The statement is compiled once per walk and run with the moment as its parameters: building
it through the ORM at every step took longer than running it.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection
from django.db.models import Exists, QuerySet, Subquery

from dunning import schedule
from dunning.intake import processing
from dunning.models import OPEN_STATES, DunningCase, OutboxItem, TestClock

# A moment no walk reaches: where it appears among the compiled parameters, the probed moment
# goes.
_MARKER = datetime(1901, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Due:
    now: bool  # something is due at or before now (a superset: leases are not looked at)
    leased: bool  # a pending outbox item carries a lease
    next: datetime | None  # the next review or outbox item after now
    next_event: datetime | None  # the next event's processing after now


class Probe:
    def __init__(self) -> None:
        self._compiled: tuple[str, list, list[int]] | None = None

    def at(self, now: datetime) -> Due:
        sql, params, slots = self._compiled or self._compile()
        moment = connection.ops.adapt_datetimefield_value(now)
        for slot in slots:
            params[slot] = moment
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            due_now, leased, *moments = cursor.fetchone() or (False, False, None, None, None)
        found = [_aware(moment) for moment in moments[:2] if moment is not None]
        event = _aware(moments[2]) if moments[2] is not None else None
        return Due(
            now=bool(due_now),
            leased=bool(leased),
            next=min(found) if found else None,
            next_event=event,
        )

    def _compile(self) -> tuple[str, list, list[int]]:
        pending = OutboxItem.objects.filter(status=OutboxItem.Status.PENDING)
        events = processing.WebhookEvent.objects.filter(status__in=processing.PENDING)
        cases = DunningCase.objects.filter(state__in=OPEN_STATES)
        # What `run_due` acts on at `_MARKER`: `due_event_ids`, `recompute_due_cases` and
        # the outbox's claim (without its lease test: a superset is safe, at worst one
        # `run_due` with nothing to do).
        due_now = (
            Exists(processing.due_events(_MARKER))
            | Exists(schedule.due_reviews(_MARKER))
            | Exists(pending.filter(next_attempt_at__lte=_MARKER))
        )
        columns = {
            "due_now": due_now,
            "leased": Exists(pending.filter(claimed_until__isnull=False)),
            "review": _first(cases.filter(next_review_at__gt=_MARKER), "next_review_at"),
            "item": _first(pending.filter(next_attempt_at__gt=_MARKER), "next_attempt_at"),
            "event": _first(events.filter(next_attempt_at__gt=_MARKER), "next_attempt_at"),
        }
        rows = TestClock.objects.filter(pk=TestClock.SINGLETON).annotate(**columns)
        sql, params = rows.values_list(*columns).query.sql_with_params()
        marker = connection.ops.adapt_datetimefield_value(_MARKER)
        slots = [index for index, value in enumerate(params) if value == marker]
        self._compiled = (sql, list(params), slots)
        return self._compiled


def _first(rows: QuerySet, field: str) -> Subquery:
    return Subquery(rows.order_by(field).values(field)[:1])


def _aware(moment: datetime | str) -> datetime:
    # SQLite hands a subquery's datetime back as text, naive UTC.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = ["Due", "Probe"]
