"""Webhook ingest: verify, validate, store the raw event once, hand it to a worker.

The stored row is the truth. Enqueueing is best effort: if the broker is down the row
stays `received` and the beat sweeper re-enqueues it (see `processing.sweep`).
"""

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction

from billing_events import signature
from billing_events.models import WebhookEvent
from billing_events.normalize import HANDLED_EVENT_TYPES, MalformedEvent, NoCustomer, parse_event
from dunning import clock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    http_status: int
    body: dict


def _reject(http_status: int, error: str) -> IngestOutcome:
    return IngestOutcome(http_status, {"error": error})


def _validate_envelope(event: object) -> str | None:
    if not isinstance(event, dict):
        return "event must be a JSON object"
    if not isinstance(event.get("id"), str) or not event["id"].startswith("evt_"):
        return "event id must be a string starting with evt_"
    if not isinstance(event.get("type"), str) or not event["type"]:
        return "event type must be a non-empty string"
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or created <= 0:
        return "event created must be a positive unix timestamp"
    if not isinstance(event.get("data"), dict) or not isinstance(event["data"].get("object"), dict):
        return "event data.object must be an object"
    return None


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
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _reject(400, "payload is not valid JSON")
    if problem := _validate_envelope(event):
        return _reject(400, problem)

    status = WebhookEvent.Status.RECEIVED
    note = ""
    if event["type"] not in HANDLED_EVENT_TYPES:
        status, note = WebhookEvent.Status.IGNORED, "event type not handled by dunning"
    else:
        try:
            parse_event(event)
        except NoCustomer as error:
            status, note = WebhookEvent.Status.IGNORED, str(error)
        except MalformedEvent as error:
            return _reject(400, f"malformed {event['type']}: {error}")

    try:
        with transaction.atomic():
            stored = WebhookEvent.objects.create(
                stripe_event_id=event["id"],
                type=event["type"],
                stripe_created=clock.from_unix(event["created"]),
                livemode=bool(event.get("livemode")),
                payload=event,
                status=status,
                last_error=note,
                received_at=now,
                next_attempt_at=(
                    now + timedelta(seconds=settings.WEBHOOK_REENQUEUE_AFTER_SECONDS)
                    if status == WebhookEvent.Status.RECEIVED
                    else None
                ),
            )
    except IntegrityError:
        return IngestOutcome(200, {"received": True, "duplicate": True})

    if status == WebhookEvent.Status.RECEIVED:
        enqueue_processing(stored.pk)
    return IngestOutcome(200, {"received": True, "status": status})


def enqueue_processing(event_pk: int) -> bool:
    """Publish the processing task; a broker outage is logged, never raised."""
    from billing_events.tasks import process_webhook_event

    try:
        process_webhook_event.apply_async(args=[event_pk])
    except Exception as error:  # noqa: BLE001 - any broker failure is recoverable by the sweeper
        logger.warning(
            "event=webhook_enqueue_failed webhook_event=%s error=%s", event_pk, type(error).__name__
        )
        return False
    return True
