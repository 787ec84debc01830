"""The backstop for missed webhooks: list Stripe's events and store the ones never delivered.

A webhook can be lost (the endpoint down past Stripe's retries, a disabled endpoint, a
secret rotated badly). Beat runs `poll_once` every STRIPE_EVENT_POLL_SECONDS: it lists
Stripe's events (GET /v1/events, the types dunning handles, newest first, every page)
created in the window since the last listing, and hands each one not stored yet to the
same screen and the same INSERT ... ON CONFLICT as the webhook (`billing_events.ingest`),
marked `recovered_by_polling`. A duplicate costs nothing: the event id is unique.

The window ends STRIPE_EVENT_POLL_GRACE_SECONDS before now, so an event whose webhook is
simply on its way is not taken for a gap. It starts where the last listing ended (the
cursor, `StripeEventPoll`); before the first listing, at the newest event stored. Stripe
keeps events 30 days: a window reaching further back is cut there, and the loss is logged.
Off when STRIPE_API_KEY is not set.
"""

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db.models import Max

from billing_events import validation
from billing_events.ingest import (
    EventRejected,
    enqueue_processing,
    screen_event,
    store_event,
)
from billing_events.models import StripeEventPoll, WebhookEvent
from billing_events.normalize import HANDLED_EVENT_TYPES
from core import clock

logger = logging.getLogger(__name__)

STRIPE_EVENT_RETENTION = timedelta(days=30)
PAGE_SIZE = 100  # Stripe's maximum
TYPES_PER_REQUEST = 20  # Stripe's maximum for `types`


@dataclass(frozen=True)
class PollReport:
    listed: int = 0
    recovered: int = 0
    rejected: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    skipped: str = ""  # why nothing was asked of Stripe


def enabled() -> bool:
    return bool(settings.STRIPE_API_KEY)


def _client() -> stripe.StripeClient:
    return stripe.StripeClient(
        settings.STRIPE_API_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE.rstrip("/")},
        http_client=stripe.RequestsClient(timeout=settings.STRIPE_API_TIMEOUT_SECONDS),
        # A list is a read: safe to retry, and the next run lists the window again anyway.
        max_network_retries=2,
    )


def list_events(
    client: stripe.StripeClient, *, after: datetime, until: datetime
) -> Iterator[list[dict[str, Any]]]:
    """Pages of Stripe's events of the handled types created in (after, until]."""
    types = sorted(HANDLED_EVENT_TYPES)
    for first in range(0, len(types), TYPES_PER_REQUEST):
        params: dict[str, Any] = {
            "created": {"gt": int(after.timestamp()), "lte": int(until.timestamp())},
            "types": types[first : first + TYPES_PER_REQUEST],
            "limit": PAGE_SIZE,
        }
        while True:
            page = client.v1.events.list(params=params)
            events = [event.to_dict(recursive=True, for_json=True) for event in page.data]
            if events:
                yield events
            if not page.has_more or not events:
                break
            params["starting_after"] = events[-1]["id"]


def _window_start(now: datetime, until: datetime) -> datetime:
    cursor = StripeEventPoll.objects.filter(pk=StripeEventPoll.SINGLETON).first()
    if cursor is not None:
        start = cursor.listed_until
    else:
        newest = WebhookEvent.objects.aggregate(at=Max("stripe_created"))["at"]
        start = newest if newest is not None else until
    oldest_listable = now - STRIPE_EVENT_RETENTION
    if start < oldest_listable:
        logger.error(
            "event=stripe_event_poll_beyond_retention listed_until=%s lost_seconds=%d",
            start.isoformat(),
            (oldest_listable - start).total_seconds(),
        )
        start = oldest_listable
    return start


def _store_recovered(event: dict[str, Any], now: datetime) -> str:
    """'recovered', 'known' or 'rejected': the webhook's checks, then its insert."""
    text = json.dumps(event, separators=(",", ":"))
    try:
        if len(text.encode()) > settings.WEBHOOK_MAX_BODY_BYTES:
            raise validation.Rejected("payload too large")
        text, parsed = validation.loads_strict(text.encode())
        if problem := validation.envelope_problem(parsed):
            raise validation.Rejected(problem)
        status, note = screen_event(parsed)
    except (validation.Rejected, EventRejected) as error:
        logger.warning(
            "event=stripe_event_poll_rejected stripe_event=%s type=%s error=%s",
            event.get("id"),
            event.get("type"),
            error,
        )
        return "rejected"
    stored_id = store_event(
        event=parsed,
        raw_body=text,
        status=status,
        note=note,
        now=now,
        recovered_by_polling=True,
    )
    if stored_id is None:
        return "known"
    age = now - clock.from_unix(parsed["created"])
    logger.warning(
        "event=webhook_gap_recovered stripe_event=%s type=%s age_seconds=%d status=%s",
        parsed["id"],
        parsed["type"],
        age.total_seconds(),
        status,
    )
    if status == WebhookEvent.Status.RECEIVED and settings.WEBHOOK_ENQUEUE_ON_INGEST:
        enqueue_processing(stored_id)
    return "recovered"


def _move_cursor(until: datetime, now: datetime) -> None:
    cursor, created = StripeEventPoll.objects.get_or_create(
        pk=StripeEventPoll.SINGLETON, defaults={"listed_until": until, "checked_at": now}
    )
    if not created:
        cursor.listed_until = max(cursor.listed_until, until)
        cursor.checked_at = now
        cursor.save(update_fields=["listed_until", "checked_at"])


def poll_once(*, client: stripe.StripeClient | None = None) -> PollReport:
    """List the events created since the last listing and store those never delivered."""
    if not enabled():
        return PollReport(skipped="STRIPE_API_KEY is not set")
    now = clock.now()
    until = now - timedelta(seconds=settings.STRIPE_EVENT_POLL_GRACE_SECONDS)
    after = _window_start(now, until)
    if after >= until:
        _move_cursor(until, now)  # a first run with nothing stored: listing starts here
        return PollReport(window_start=after, window_end=until, skipped="nothing new to list")
    client = client or _client()
    counts = {"recovered": 0, "known": 0, "rejected": 0}
    try:
        for page in list_events(client, after=after, until=until):
            known = set(
                WebhookEvent.objects.filter(
                    stripe_event_id__in=[event["id"] for event in page]
                ).values_list("stripe_event_id", flat=True)
            )
            for event in page:
                outcome = "known" if event["id"] in known else _store_recovered(event, now)
                counts[outcome] += 1
    except stripe.StripeError as error:
        # What was stored stays stored; the cursor stays, so the next run lists it all again.
        logger.warning(
            "event=stripe_event_poll_failed error=%s http_status=%s recovered_so_far=%s",
            type(error).__name__,
            error.http_status,
            counts["recovered"],
        )
        return PollReport(
            listed=sum(counts.values()),
            recovered=counts["recovered"],
            rejected=counts["rejected"],
            window_start=after,
            window_end=until,
            skipped=f"Stripe answered with an error ({type(error).__name__})",
        )
    # Only a complete listing moves the cursor: a failure part-way lists the window again.
    _move_cursor(until, now)
    report = PollReport(
        listed=sum(counts.values()),
        recovered=counts["recovered"],
        rejected=counts["rejected"],
        window_start=after,
        window_end=until,
    )
    logger.info(
        "event=stripe_event_poll listed=%s recovered=%s rejected=%s window_seconds=%d",
        report.listed,
        report.recovered,
        report.rejected,
        (until - after).total_seconds(),
    )
    return report
