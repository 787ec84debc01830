"""Processing stored webhook events into the mirror stores and the dunning engine.

An event is `processed` only once its facts are merged and its trigger handled, in one
transaction, so a crash anywhere leaves it retryable. Failures are never dropped: the
event goes `failed` with the error and a `next_attempt_at` (exponential backoff), the
beat sweeper retries it, and after WEBHOOK_MAX_ATTEMPTS it goes `dead`, visible in the
admin until someone reprocesses it.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet

from billing_events.facts import AttemptFact, Fact, InvoiceFact
from billing_events.mirror import merge_fact
from billing_events.models import Account, WebhookEvent
from billing_events.normalize import parse_event
from core import clock
from core.locks import lock_customer_account
from core.model_rows import ModelRows
from core.prepared import PreparedStatement
from core.row_sql import RowUpdate
from dunning import queue
from dunning.engine import recompute_within
from dunning.intake.triggers import TRIGGER_FOR_EVENT
from dunning.triggers import Trigger

logger = logging.getLogger(__name__)

RETRY_CAP = timedelta(hours=6)
PENDING = (WebhookEvent.Status.RECEIVED, WebhookEvent.Status.FAILED)


def retry_delay(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, 4 min ... capped at 6 h."""
    return queue.backoff(attempts, cap=RETRY_CAP)


def events_queue() -> queue.Queue:
    """Stored events waiting to be processed; a claim pushes the event's own next look
    forward (its lease), so the pump never hands one out twice while it waits in a queue.
    Built per call: the lease is a setting."""
    return queue.Queue(
        model=WebhookEvent,
        waiting=Q(status__in=PENDING),
        lease=timedelta(seconds=settings.WEBHOOK_REENQUEUE_AFTER_SECONDS),
        lease_field="next_attempt_at",
        order=("next_attempt_at",),
    )


def invoice_named_by(fact: Fact) -> str:
    if isinstance(fact, InvoiceFact):
        return fact.stripe_invoice_id
    if isinstance(fact, AttemptFact):
        return fact.invoice_id
    return ""


def apply_event(event: WebhookEvent) -> Trigger:
    """Merge the event's facts and recompute its account, inside the caller's transaction
    (no savepoint of its own: the caller's transaction is the event's, all or nothing)."""
    fact = parse_event(event.payload)
    # Per-account serialization: the engine takes the same lock, so no two workers
    # merge or recompute one account at once. Looked up and locked in one statement; a
    # customer seen for the first time gets its account first.
    account = lock_customer_account(fact.customer_id)
    if account is None:
        Account.objects.get_or_create(stripe_customer_id=fact.customer_id)
        account = lock_customer_account(fact.customer_id)
    merge_fact(account, fact)
    trigger = Trigger(
        kind=TRIGGER_FOR_EVENT[event.payload["type"]],
        account_id=account.pk,
        source=f"stripe:{event.stripe_event_id}",
        detail={"invoice": invoice_named_by(fact)},
    )
    recompute_within(trigger)
    if event.account_id != account.pk:
        event.account = account
    return trigger


def process_event(*, event_id: int) -> str:
    """Process one stored event; returns its status afterwards. Safe to call twice.

    The event's row lock, the merge, the recompute and the event marked processed are one
    transaction with no savepoint inside (two round trips each way saved on every event).
    When anything in it fails, all of it rolls back and the failure is recorded on the
    event in a transaction of its own."""
    try:
        with transaction.atomic():
            event = _take(event_id)
            if event is None:
                return "skipped"  # done already, ignored, dead, or another worker has it
            apply_event(event)
            event.status = WebhookEvent.Status.PROCESSED
            event.processed_at = clock.now()
            event.next_attempt_at = None
            event.last_error = ""
            return _save(event)
    except Exception as error:
        with transaction.atomic():
            event = _take(event_id)
            if event is None:
                return "skipped"
            event.last_error = f"{type(error).__name__}: {error}"[:2000]
            if event.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
                event.status = WebhookEvent.Status.DEAD
                event.next_attempt_at = None
            else:
                event.status = WebhookEvent.Status.FAILED
                event.next_attempt_at = clock.now() + retry_delay(event.attempts)
            logger.warning(
                "event=webhook_processing_failed stripe_event=%s type=%s attempts=%s status=%s",
                event.stripe_event_id,
                event.type,
                event.attempts,
                event.status,
                exc_info=True,
            )
            return _save(event)


EVENT_ROWS = ModelRows(WebhookEvent)
# The hot path's two statements about the event itself, written once and prepared once
# a session (`core.prepared`): compiling the queryset and the update each time cost more
# than running them.
TAKE = PreparedStatement(
    "intake_event_take",
    f"SELECT {EVENT_ROWS.columns('e')} FROM {EVENT_ROWS.table} e"
    " WHERE e.id = %(event)s AND e.status = ANY(%(pending)s) FOR UPDATE SKIP LOCKED",
    {"event": "bigint", "pending": "text[]"},
)
CLOSE = RowUpdate(
    "intake_event_close", WebhookEvent, where="id = %(event)s", where_types={"event": "bigint"}
)
CLOSED_FIELDS = (
    "status",
    "attempts",
    "last_error",
    "next_attempt_at",
    "processed_at",
    "account_id",
)


def _take(event_id: int) -> WebhookEvent | None:
    """The event, locked, if it still waits for processing; this try counted."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(TAKE.sql_to_send(), {"event": event_id, "pending": list(PENDING)})
            row = cursor.fetchone()
        event = EVENT_ROWS.build(row) if row is not None else None
    else:  # the embedded default: no row locks to skip
        event = WebhookEvent.objects.filter(pk=event_id, status__in=PENDING).first()
    if event is not None:
        event.attempts += 1
    return event


def _save(event: WebhookEvent) -> str:
    CLOSE.send({name: getattr(event, name) for name in CLOSED_FIELDS}, event=event.pk)
    return event.status


def due_events(now: datetime) -> QuerySet:
    """The stored events whose processing (first, or again after a failure) is due."""
    return WebhookEvent.objects.filter(status__in=PENDING, next_attempt_at__lte=now)


def due_event_ids(*, now: datetime, limit: int) -> list[int]:
    return list(due_events(now).order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


def claim_due(*, limit: int) -> list[int]:
    """Take due events (new ones and failed ones whose backoff is over), leased."""
    return queue.claim(events_queue(), now=clock.now(), limit=limit)


def sweep(*, limit: int = 5000, batch: int = 50) -> int:
    """The event pump: hand due events to workers, `batch` ids per task; a batch the broker
    refused is due again at the next pump run. Processing twice is harmless anyway
    (status check under a row lock)."""
    from billing_events.ingest import enqueue_batch

    ids = claim_due(limit=limit)
    return queue.dispatch(events_queue(), ids, publish=enqueue_batch, batch=batch, now=clock.now)
