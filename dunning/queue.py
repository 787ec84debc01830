"""The one work queue over database rows: the webhook pump's events and the outbox's side
effects both wait in it.

    claim()      take due rows with SELECT ... FOR UPDATE SKIP LOCKED (two dispatchers, or
                 a dispatcher and a worker, never wait for each other) and lease them: a
                 claimed row is not due again until its lease runs out, so a row whose task
                 message or worker was lost is handed out again then, and never twice before
    backoff()    how long a failed row waits before its next try: 30 s, 1 min, 2 min ...
                 doubling up to the queue's cap (one formula for both)
    dispatch()   hand claimed ids to workers, one broker message per batch of ids; a batch
                 the broker refused is due again at once (the next dispatch retries it)
    redrive()    make rows due now, lease dropped (support's and the stuck sweeper's re-drive)

The database, not the broker, holds every wait: a message is only ever a list of ids that
are due now, so losing one costs a lease, never a row.
"""

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, models, transaction

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 30


def backoff(attempts: int, *, cap: timedelta) -> timedelta:
    """30 s after the first failure, doubling with each, at most `cap`."""
    seconds = BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, cap.total_seconds()))


@dataclass(frozen=True)
class Queue:
    """Which rows of `model` wait (`waiting`), in what order they are taken, and how a claim
    is leased: `lease_field` is set to now + `lease` (the outbox keeps a lease column; the
    event log pushes the row's own next_attempt_at forward)."""

    model: type[models.Model]
    waiting: models.Q
    lease: timedelta
    lease_field: str
    order: tuple[str, ...] = ("next_attempt_at", "pk")
    due_field: str = "next_attempt_at"

    def due(self, now: datetime) -> models.QuerySet:
        rows = self.model.objects.filter(self.waiting, **{f"{self.due_field}__lte": now})
        if self.lease_field != self.due_field:
            rows = rows.exclude(**{f"{self.lease_field}__gt": now})
        return rows


def claim(queue: Queue, *, now: datetime, limit: int) -> list[int]:
    """Due rows, oldest first, leased until now + queue.lease; at most `limit`. On
    PostgreSQL one statement in autocommit (`UPDATE ... FROM (SELECT ... FOR UPDATE SKIP
    LOCKED)`): the dispatcher claims on every beat tick and every kick, and a transaction
    around a SELECT and an UPDATE is four round trips."""
    if connection.vendor != "postgresql":
        return _claim_in_two(queue, now=now, limit=limit)
    meta = queue.model._meta
    # The order's values come back with each pk (RETURNING keeps no order), as they were
    # before the lease moved one of them.
    columns = [*queue.order, *([] if "pk" in queue.order else ["pk"])]
    due = queue.due(now).order_by(*queue.order).values_list(*columns)[:limit]
    picked, params = due.query.sql_with_params()
    names = [f"o{k}" for k in range(len(columns))]
    names[columns.index("pk")] = "pk"
    quote = connection.ops.quote_name
    sql = (
        f"WITH picked ({', '.join(names)}) AS ({picked} FOR UPDATE SKIP LOCKED) "
        f"UPDATE {quote(meta.db_table)} AS t "
        f"SET {quote(meta.get_field(queue.lease_field).column)} = %s "
        f"FROM picked WHERE t.{quote(meta.pk.column)} = picked.pk "
        f"RETURNING {', '.join(f'picked.{name}' for name in names)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, now + queue.lease])
        rows = cursor.fetchall()
    ordered = sorted(rows, key=lambda row: row[: len(queue.order)])
    return [row[columns.index("pk")] for row in ordered]


def _claim_in_two(queue: Queue, *, now: datetime, limit: int) -> list[int]:
    """The claim on SQLite (the embedded demo), which has no SKIP LOCKED: one writer."""
    with transaction.atomic():
        ids = list(
            queue.due(now)
            .select_for_update(skip_locked=True)
            .order_by(*queue.order)
            .values_list("pk", flat=True)[:limit]
        )
        if ids:
            queue.model.objects.filter(pk__in=ids).update(**{queue.lease_field: now + queue.lease})
    return ids


def dispatch(
    queue: Queue,
    ids: list[int],
    *,
    publish: Callable[[list[int]], object],
    batch: int,
    now: Callable[[], datetime],
) -> int:
    """Publish `ids` in batches (one message each); returns how many were handed over. A
    batch the broker refused (`publish` raised or returned a false value) is made due
    again now, for the next dispatch."""
    handed = 0
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        try:
            published = publish(chunk)
        except Exception as error:  # noqa: BLE001 - the rows stay in the database
            logger.warning(
                "event=queue_publish_failed table=%s rows=%s error=%s",
                queue.model._meta.db_table,
                len(chunk),
                type(error).__name__,
            )
            published = False
        if published:
            handed += len(chunk)
        else:
            redrive(queue, chunk, now=now(), waiting_only=True)
    return handed


def redrive(
    queue: Queue,
    rows: models.QuerySet | Iterable[int],
    *,
    now: datetime,
    waiting_only: bool = False,
    **values,
) -> int:
    """Rows (a queryset, or ids) due now, their lease dropped, with any other `values` (a
    status to return to). `waiting_only`: only rows still waiting (a refused publish: a
    worker may have finished one meanwhile)."""
    if not isinstance(rows, models.QuerySet):
        rows = queue.model.objects.filter(pk__in=list(rows))
    if waiting_only:
        rows = rows.filter(queue.waiting)
    lease = {} if queue.lease_field == queue.due_field else {queue.lease_field: None}
    return rows.update(**{queue.due_field: now, **lease, **values})
