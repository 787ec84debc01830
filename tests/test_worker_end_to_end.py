"""Through the real broker: a Celery worker on Redis processes what the webhook stored."""

import time
from contextlib import contextmanager

import pytest
from django.conf import settings

from billing_events.models import Invoice, WebhookEvent
from config.celery import app as celery_app
from dunning.intake import processing
from tests.dunning_helpers import on_stripe_clock
from tests.events import Customer

pytestmark = [pytest.mark.worker]


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@contextmanager
def broker_at(url: str):
    def use(value: str) -> None:
        celery_app.conf.broker_url = value
        celery_app.conf.broker_write_url = value
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    use(url)
    try:
        yield
    finally:
        use(settings.CELERY_BROKER_URL)


def test_webhook_to_worker_to_mirror(stripe_sender, celery_worker_thread):
    cus = on_stripe_clock(Customer())  # a fresh failure: its first retry is a day away
    stripe_sender.send(cus.invoice_event("invoice.payment_failed", attempt_count=1))
    assert processing.sweep() == 1  # the event pump: beat runs it every second

    assert wait_for(lambda: WebhookEvent.objects.filter(status="processed").exists())
    assert Invoice.objects.get().attempt_count == 1


def test_nothing_is_lost_when_the_broker_is_down_at_ingest(
    stripe_sender, transactional_db, settings
):
    settings.WEBHOOK_ENQUEUE_ON_INGEST = True  # the request publishes, and the broker is down
    cus = Customer()
    with broker_at("redis://127.0.0.1:1/0"):
        response = stripe_sender.send(cus.invoice_event("invoice.payment_failed"))
        assert processing.sweep() == 0  # the pump cannot hand it out either

    assert response.status_code == 200
    assert WebhookEvent.objects.get().status == "received"

    from celery.contrib.testing.worker import start_worker

    celery_app.control.purge()
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert processing.sweep() == 1  # what beat runs every WEBHOOK_SWEEP_SECONDS
        assert wait_for(lambda: WebhookEvent.objects.filter(status="processed").exists())
    assert Invoice.objects.count() == 1


def test_engine_side_effects_run_on_workers_after_the_commit(stripe_sender, celery_worker_thread):
    from billing_events.models import PaymentAttempt
    from dunning.models import Decision, OutboxItem

    cus = on_stripe_clock(Customer())
    cus.tick(-2 * 86400)  # the failure was two days ago: its first retry is due now
    stripe_sender.send(cus.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds"))
    stripe_sender.send(cus.invoice_event("invoice.payment_failed", attempt_count=1))
    assert processing.sweep() == 2

    assert wait_for(lambda: WebhookEvent.objects.filter(status="processed").count() == 2)
    assert wait_for(
        lambda: OutboxItem.objects.filter(kind="payment_retry", status="done").exists()
    ), list(OutboxItem.objects.values("kind", "status", "last_error"))
    # The worker charged with no lock held, recorded the decline and handed it back.
    assert wait_for(lambda: Decision.objects.filter(trigger="RETRY_RESULT").exists())
    assert PaymentAttempt.objects.filter(attempt_key__startswith="ch_sim_").count() == 1
