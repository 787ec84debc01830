"""A failing event is never dropped: it is retried with backoff, then goes dead, visibly."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.sites import site
from django.utils import timezone
from freezegun import freeze_time

from billing_events import ingest
from billing_events.admin import WebhookEventAdmin
from billing_events.models import Invoice, WebhookEvent
from dunning.intake import processing
from dunning.intake.processing import due_event_ids, process_event
from tests.events import Customer, deliver

pytestmark = pytest.mark.django_db


@pytest.fixture
def broken_engine(monkeypatch):
    """The dunning handler raises, as a bug or an unavailable dependency would."""
    calls = {"n": 0}

    def handle(trigger):
        calls["n"] += 1
        raise RuntimeError("engine unavailable")

    monkeypatch.setattr(processing, "recompute_within", handle)
    return calls


def test_failure_is_recorded_with_its_error_and_next_retry(stripe_sender, broken_engine):
    cus = Customer()
    with freeze_time("2026-11-25 10:00:00"):
        assert deliver(stripe_sender, cus.invoice_event("invoice.payment_failed")) == ["failed"]

    event = WebhookEvent.objects.get()
    assert event.attempts == 1
    assert event.last_error == "RuntimeError: engine unavailable"
    assert event.next_attempt_at == datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC)
    # The merge rolled back with the failure: no half-applied mirror rows.
    assert Invoice.objects.count() == 0


def test_failed_event_becomes_due_after_its_backoff_and_then_succeeds(
    stripe_sender, broken_engine, monkeypatch
):
    cus = Customer()
    with freeze_time("2026-11-25 10:00:00") as frozen:
        deliver(stripe_sender, cus.invoice_event("invoice.payment_failed"))
        event = WebhookEvent.objects.get()
        assert due_event_ids(now=timezone.now(), limit=10) == []

        frozen.tick(timedelta(seconds=31))
        assert due_event_ids(now=timezone.now(), limit=10) == [event.pk]

        # The fix is deployed.
        monkeypatch.setattr(processing, "recompute_within", lambda trigger: None)
        assert process_event(event_id=event.pk) == "processed"

    event.refresh_from_db()
    assert (event.status, event.attempts, event.last_error) == ("processed", 2, "")
    assert Invoice.objects.count() == 1


def test_backoff_doubles_and_the_event_goes_dead_after_max_attempts(
    stripe_sender, broken_engine, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 4
    cus = Customer()
    with freeze_time("2026-11-25 10:00:00") as frozen:
        deliver(stripe_sender, cus.invoice_event("invoice.payment_failed"))
        event = WebhookEvent.objects.get()
        delays = []
        while event.status == WebhookEvent.Status.FAILED:
            delays.append((event.next_attempt_at - timezone.now()).total_seconds())
            frozen.move_to(event.next_attempt_at)
            process_event(event_id=event.pk)
            event.refresh_from_db()

    assert delays == [30, 60, 120]
    assert (event.status, event.attempts, event.next_attempt_at) == ("dead", 4, None)
    assert broken_engine["n"] == 4
    assert due_event_ids(now=timezone.now() + timedelta(days=30), limit=10) == []


def test_dead_events_are_counted_and_reprocessable(
    stripe_sender, broken_engine, settings, monkeypatch
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    settings.WEBHOOK_REENQUEUE_AFTER_SECONDS = 0
    cus = Customer()
    deliver(stripe_sender, cus.invoice_event("invoice.payment_failed"))
    assert WebhookEvent.objects.filter(status="dead").count() == 1

    monkeypatch.setattr(processing, "recompute_within", lambda trigger: None)
    # what the admin's "reprocess" action calls; the publish goes to the real broker
    assert ingest.reprocess(event_ids=[WebhookEvent.objects.get().pk]) == 1
    event = WebhookEvent.objects.get()
    assert event.status == "received"
    assert process_event(event_id=event.pk) == "processed"


def test_admin_offers_reprocess_and_filters_by_status():
    admin = WebhookEventAdmin(WebhookEvent, site)
    assert "reprocess" in admin.actions
    assert "status" in admin.list_filter
