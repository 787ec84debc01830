import json
import time

import pytest

from billing_events import samples
from billing_events.models import Account, Invoice, WebhookEvent

pytestmark = pytest.mark.django_db


def failed_invoice_event(**overrides) -> dict:
    created = int(time.time())
    obj = samples.invoice(
        id=overrides.pop("invoice_id", "in_ingest"),
        customer="cus_ingest",
        created=created,
        attempt_count=1,
    )
    return samples.event("invoice.payment_failed", obj, created=created, **overrides)


def test_signed_event_is_stored_once_and_acknowledged(stripe_sender):
    event = failed_invoice_event()

    first = stripe_sender.send(event)
    second = stripe_sender.send(event)

    assert first.status_code == 200 and first.json() == {"received": True, "status": "received"}
    assert second.status_code == 200 and second.json()["duplicate"] is True
    stored = WebhookEvent.objects.get()
    assert stored.stripe_event_id == event["id"]
    assert stored.status == WebhookEvent.Status.RECEIVED
    assert stored.payload == event


def test_processing_happens_after_the_response_not_in_it(stripe_sender):
    stripe_sender.send(failed_invoice_event())

    assert Invoice.objects.count() == 0
    assert Account.objects.count() == 0


def test_malformed_json_is_rejected_and_nothing_stored(stripe_sender):
    payload = b'{"id": "evt_1", "type": '
    header = samples.sign_header(
        payload=payload, secret="whsec_test_current", timestamp=int(time.time())
    )

    response = stripe_sender.post_raw(payload, header)

    assert response.status_code == 400
    assert response.json()["error"] == "payload is not valid JSON"
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.pop("id"), "event id"),
        (lambda e: e.update(id=42), "event id"),
        (lambda e: e.update(type=""), "event type"),
        (lambda e: e.update(created="yesterday"), "event created"),
        (lambda e: e.update(data={}), "data.object"),
        (lambda e: e["data"]["object"].pop("status"), "malformed invoice.payment_failed"),
        (lambda e: e["data"]["object"].update(amount_due="20.00"), "amount_due"),
        (lambda e: e["data"]["object"].update(status="weird"), "invoice status"),
    ],
)
def test_invalid_event_gets_a_clear_400_and_stores_nothing(stripe_sender, mutate, message):
    event = failed_invoice_event()
    mutate(event)

    response = stripe_sender.send(event)

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert WebhookEvent.objects.count() == 0


def test_a_json_array_is_not_an_event(stripe_sender):
    payload = json.dumps([failed_invoice_event()]).encode()
    header = samples.sign_header(
        payload=payload, secret="whsec_test_current", timestamp=int(time.time())
    )

    assert stripe_sender.post_raw(payload, header).status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_unknown_event_type_is_recorded_as_ignored(stripe_sender):
    event = samples.event(
        "plan.created", samples.sample("event")["data"]["object"], created=int(time.time())
    )

    response = stripe_sender.send(event)

    assert response.status_code == 200
    stored = WebhookEvent.objects.get()
    assert stored.status == WebhookEvent.Status.IGNORED
    assert "not handled" in stored.last_error


def test_guest_charge_without_customer_is_recorded_as_ignored(stripe_sender):
    created = int(time.time())
    charge = samples.charge(id="ch_guest", customer=None, created=created)

    response = stripe_sender.send(samples.event("charge.failed", charge, created=created))

    assert response.status_code == 200
    assert WebhookEvent.objects.get().status == WebhookEvent.Status.IGNORED


def test_oversized_body_gets_413_and_stores_nothing(stripe_sender, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 4096
    event = failed_invoice_event()
    event["data"]["object"]["description"] = "x" * 5000

    response = stripe_sender.send(event)

    assert response.status_code == 413
    assert WebhookEvent.objects.count() == 0


def test_only_post_is_allowed(client):
    assert client.get("/webhooks/stripe/").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_a_connection_postgres_dropped_is_replaced_before_the_next_request(stripe_sender):
    """After a PostgreSQL restart the persistent connection is dead; the webhook must not
    answer 500 until it ages out (CONN_HEALTH_CHECKS)."""
    import psycopg
    from django.db import close_old_connections, connection

    connection.ensure_connection()
    stale_pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    admin_params = {k: params[k] for k in ("dbname", "user", "host", "port") if k in params}
    with psycopg.connect(**admin_params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [stale_pid])
    # What Django does when every request starts (the test client leaves it out).
    close_old_connections()

    response = stripe_sender.send(failed_invoice_event())

    assert response.status_code == 200, response.content
    assert connection.connection.info.backend_pid != stale_pid
    assert WebhookEvent.objects.count() == 1
