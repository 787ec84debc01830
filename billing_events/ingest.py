"""Webhook ingest: verify, validate, store the raw event once, answer.

The stored row is the truth. A received event is due at once: the event pump (beat,
every WEBHOOK_SWEEP_SECONDS) claims due rows and hands them to workers in batches, so the
request does no broker I/O and a broker outage loses nothing (see
`dunning.intake.processing.sweep`).
With WEBHOOK_ENQUEUE_ON_INGEST (the default with in-process tasks) the request hands the
event over itself.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from celery import current_app
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.backends.utils import CursorWrapper

from billing_events import signature, validation
from billing_events.facts import MalformedEvent, NoCustomer
from billing_events.models import WebhookEvent
from billing_events.normalize import HANDLED_EVENT_TYPES, parse_event
from core import clock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    http_status: int
    body: dict


def _reject(http_status: int, error: str) -> IngestOutcome:
    return IngestOutcome(http_status, {"error": error})


# What parsing an object of the wrong shape raises (a list where an object belongs, a
# timestamp datetime cannot hold); processing would raise the same on every retry.
PARSE_ERRORS = (MalformedEvent, TypeError, AttributeError, ValueError, OverflowError, OSError)


def _reason(error: Exception) -> str:
    if isinstance(error, MalformedEvent):
        return str(error)
    return f"data.object has a field of the wrong type or range ({type(error).__name__})"


def ingest_stripe_webhook(*, payload: bytes, signature_header: str | None) -> IngestOutcome:
    if len(payload) > settings.WEBHOOK_MAX_BODY_BYTES:
        return _reject(413, "payload too large")
    now = clock.now()
    try:
        signature.verify(
            payload=payload,
            header=signature_header,
            secrets=settings.STRIPE_WEBHOOK_SECRETS,
            tolerance_seconds=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
            now_unix=now.timestamp(),
        )
    except signature.SignatureError as error:
        return _reject(400, f"invalid signature: {error}")
    try:
        _, event = validation.loads_strict(payload)
    except validation.Rejected as error:
        return _reject(400, str(error))
    if problem := validation.envelope_problem(event):
        return _reject(400, problem)

    try:
        status, note = screen_event(event)
    except EventRejected as error:
        return _reject(400, str(error))

    stored_id = store_event(
        event=event,
        raw_body=payload,  # the signed bytes themselves: checked strict UTF-8 JSON above
        status=status,
        note=note,
        now=now,
    )
    if stored_id is None:
        return IngestOutcome(200, {"received": True, "duplicate": True})
    if status == WebhookEvent.Status.RECEIVED and settings.WEBHOOK_ENQUEUE_ON_INGEST:
        enqueue_processing(stored_id)
    return IngestOutcome(200, {"received": True, "status": status})


class EventRejected(ValueError):
    """The event is malformed for its type; the message says how."""


def screen_event(event: dict) -> tuple[str, str]:
    """The status (and note) a well-enveloped event is stored with: received when dunning
    acts on it, ignored otherwise. Raises EventRejected for an event that processing could
    never apply. Shared by the webhook and the polling backstop, so both store alike."""
    if event["type"] not in HANDLED_EVENT_TYPES:
        return WebhookEvent.Status.IGNORED, "event type not handled by dunning"
    try:
        fact = parse_event(event)
    except NoCustomer as error:
        return WebhookEvent.Status.IGNORED, str(error)
    except PARSE_ERRORS as error:
        raise EventRejected(f"malformed {event['type']}: {_reason(error)}") from error
    if problem := validation.fact_problem(fact):
        raise EventRejected(f"malformed {event['type']}: {problem}")
    return WebhookEvent.Status.RECEIVED, ""


_INSERT = (
    f"INSERT INTO {WebhookEvent._meta.db_table} (stripe_event_id, type, stripe_created,"
    " livemode, raw_body, status, attempts, last_error, next_attempt_at, received_at,"
    " recovered_by_polling) VALUES (%s, %s, %s, %s, {body}, %s, 0, %s, %s, %s, %s)"
    " ON CONFLICT (stripe_event_id) DO NOTHING RETURNING id"
)
# On PostgreSQL the body travels as the bytes it came in (%b: a binary parameter, apart
# from the statement) and the server makes them text; no escaped copy of it is spliced
# into the SQL. Not prepared: Django turns psycopg's preparing off for every statement
# (`prepare_threshold` None, for transaction-pooling bouncers), and planning this INSERT
# is a small part of the request.
INSERT_POSTGRES = _INSERT.format(body="convert_from(%b, 'UTF8')")
INSERT_PORTABLE = _INSERT.format(body="%s")


def _binding_cursor() -> CursorWrapper:
    """Django's cursor (thread check, execute wrappers, query log, error mapping) over a
    psycopg cursor that binds parameters on the server. Django's own binds on the client,
    which would splice a quoted copy of the body into the SQL."""
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        cursor = psycopg.Cursor(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(cursor)
    return connection.make_cursor(cursor)


def _insert_postgres(params: list) -> tuple | None:
    # Before a request's first query Django checks a reused connection with a `SELECT 1`
    # round trip (CONN_HEALTH_CHECKS). Here the INSERT is that check: on a connection
    # PostgreSQL dropped (a restart, a failover) it fails before anything is written, and
    # runs once more on a new connection; ON CONFLICT makes a second run harmless anyway.
    unchecked = connection.health_check_enabled and not connection.health_check_done
    try:
        row = _execute_insert(params)
    except (InterfaceError, OperationalError):
        if not unchecked or connection.in_atomic_block:
            raise
        connection.close()
        row = _execute_insert(params)
    connection.health_check_done = True
    return row


def _execute_insert(params: list) -> tuple | None:
    with _binding_cursor() as cursor:
        cursor.execute(INSERT_POSTGRES, params)
        return cursor.fetchone()


def store_event(
    *,
    event: dict,
    raw_body: bytes | str,
    status: str,
    note: str,
    now: datetime,
    recovered_by_polling: bool = False,
) -> int | None:
    """One statement, in autocommit: insert the event unless its id is known already.
    Returns the new row's id, or None for a duplicate delivery. A received event is due
    for processing at once; the pump (or the request itself) hands it to a worker.
    `raw_body` is stored verbatim: the bytes as received (strict UTF-8), or their text.
    `recovered_by_polling` marks an event the backstop found that no webhook delivered."""
    due = now if status == WebhookEvent.Status.RECEIVED else None
    created = clock.from_unix(event["created"])
    params = [event["id"], event["type"], created, bool(event.get("livemode")), raw_body]
    params += [status, note, due, now, recovered_by_polling]
    if connection.vendor == "postgresql":
        if isinstance(raw_body, str):
            params[4] = raw_body.encode()
        row = _insert_postgres(params)
    else:
        adapt = connection.ops.adapt_datetimefield_value
        params[2], params[7], params[8] = adapt(created), adapt(due), adapt(now)
        if isinstance(raw_body, bytes):
            params[4] = raw_body.decode()
        with connection.cursor() as cursor:
            cursor.execute(INSERT_PORTABLE, params)
            row = cursor.fetchone()
    return row[0] if row else None


# Processing a stored event is dunning's (`dunning/intake/`): its tasks are published by
# name, so this app never imports the one that acts on what it stores.
PROCESS_EVENT_TASK = "dunning.intake.tasks.process_webhook_event"
PROCESS_EVENTS_TASK = "dunning.intake.tasks.process_webhook_events"


def enqueue_processing(event_pk: int) -> bool:
    """Publish the processing task; a broker outage is logged, never raised."""
    try:
        current_app.signature(PROCESS_EVENT_TASK, args=[event_pk]).apply_async()
    except Exception as error:  # noqa: BLE001 - any broker failure is recoverable by the sweeper
        logger.warning(
            "event=webhook_enqueue_failed webhook_event=%s error=%s", event_pk, type(error).__name__
        )
        return False
    return True


def enqueue_batch(event_pks: list[int]) -> int:
    """Publish one task for a batch of events; returns how many were handed over."""
    try:
        current_app.signature(PROCESS_EVENTS_TASK, args=[event_pks]).apply_async()
    except Exception as error:  # noqa: BLE001 - the next pump run hands them out again
        logger.warning(
            "event=webhook_enqueue_failed webhook_events=%s error=%s",
            len(event_pks),
            type(error).__name__,
        )
        return 0
    return len(event_pks)


def reprocess(*, event_ids: Iterable[int]) -> int:
    """Support's re-drive: put events back in the queue, including dead and processed ones."""
    now = clock.now()
    ids = list(
        WebhookEvent.objects.filter(pk__in=list(event_ids), type__in=list(HANDLED_EVENT_TYPES))
        .exclude(status=WebhookEvent.Status.IGNORED)
        .values_list("pk", flat=True)
    )
    WebhookEvent.objects.filter(pk__in=ids).update(
        status=WebhookEvent.Status.RECEIVED,
        next_attempt_at=now + timedelta(seconds=settings.WEBHOOK_REENQUEUE_AFTER_SECONDS),
    )
    for pk in ids:
        enqueue_processing(pk)
    return len(ids)
