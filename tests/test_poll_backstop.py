"""The backstop for missed webhooks: Stripe's event list against what was delivered."""

import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from prometheus_client.parser import text_string_to_metric_families

from billing_events import polling
from billing_events.models import StripeEventPoll, WebhookEvent
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import test_clock as test_clock_module
from dunning.intake.processing import process_event
from tests.dunning_helpers import case_of
from tests.events import deliver
from tests.fake_stripe import API_KEY

pytestmark = pytest.mark.django_db(transaction=True)

GRACE = 600


@pytest.fixture
def stripe_api(settings, fake_stripe, test_clock):
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake_stripe.url
    settings.STRIPE_EVENT_POLL_GRACE_SECONDS = GRACE
    return fake_stripe


def at(customer: StripeCustomer, seconds_ago: float) -> StripeCustomer:
    """The customer's Stripe clock `seconds_ago` before the project clock."""
    customer.t = int(clock.now().timestamp() - seconds_ago)
    return customer


def recovered_metric(client) -> dict[str, float]:
    body = client.get("/metrics").content.decode()
    return {
        sample.labels["type"]: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "dunning_webhook_events_recovered_by_polling_total" and sample.value
    }


def test_an_event_never_delivered_is_recovered_once_and_acted_on(
    stripe_api, stripe_sender, client, caplog
):
    cus = StripeCustomer()
    charge = stripe_api.add_event(
        at(cus, 3600).charge_event("charge.failed", "ch_1", decline_code="insufficient_funds")
    )
    deliver(stripe_sender, charge)  # delivered: the newest event seen
    missed = stripe_api.add_event(
        at(cus, 1800).invoice_event("invoice.payment_failed", attempt_count=1)
    )
    unhandled = at(cus, 1700)._event("product.created", {"id": "prod_1", "object": "product"})
    stripe_api.add_event(unhandled)

    with caplog.at_level(logging.WARNING, logger="billing_events.polling"):
        report = polling.poll_once()

    assert (report.listed, report.recovered) == (1, 1)  # the delivered charge is past the window
    stored = WebhookEvent.objects.get(stripe_event_id=missed["id"])
    assert stored.recovered_by_polling and stored.status == "received"
    assert stored.payload == missed
    assert not WebhookEvent.objects.get(stripe_event_id=charge["id"]).recovered_by_polling
    assert not WebhookEvent.objects.filter(stripe_event_id=unhandled["id"]).exists()
    [gap] = [r.getMessage() for r in caplog.records if "webhook_gap_recovered" in r.getMessage()]
    assert "type=invoice.payment_failed age_seconds=1800" in gap

    assert process_event(event_id=stored.pk) == "processed"  # the worker's path, as for a webhook
    assert case_of(cus).is_open
    assert recovered_metric(client) == {"invoice.payment_failed": 1.0}

    # The webhook arrives late after all: a duplicate, the row stays as recovered.
    assert stripe_sender.send(missed).json()["duplicate"] is True
    assert polling.poll_once().recovered == 0
    assert WebhookEvent.objects.filter(stripe_event_id=missed["id"]).count() == 1
    assert recovered_metric(client) == {"invoice.payment_failed": 1.0}


def test_the_listing_asks_for_the_window_since_the_last_one_and_reads_every_page(stripe_api):
    cus = StripeCustomer()
    seen = at(cus, 7200).charge_event("charge.failed", "ch_0", decline_code="insufficient_funds")
    WebhookEvent.objects.create(
        stripe_event_id=seen["id"],
        type=seen["type"],
        stripe_created=clock.from_unix(seen["created"]),
        payload=seen,
        status="processed",
        received_at=clock.now(),
    )
    missed = []
    for n in range(250):
        at(cus, 7000 - n)
        missed.append(stripe_api.add_event(cus.invoice_event("invoice.updated", f"in_{n}")))

    report = polling.poll_once()

    assert report.recovered == 250
    assert WebhookEvent.objects.filter(recovered_by_polling=True).count() == 250
    lists = stripe_api.requests_to("GET", "/v1/events")
    now = int(clock.now().timestamp())
    assert len(lists) == 3  # 100 + 100 + 50
    assert all(r.query["created[gt]"] == str(seen["created"]) for r in lists)
    assert all(r.query["created[lte]"] == str(now - GRACE) for r in lists)
    assert lists[0].query["limit"] == "100" and "starting_after" not in lists[0].query
    assert lists[1].query["starting_after"] == missed[150]["id"]  # newest first
    listed_types = {v for k, v in lists[0].query.items() if k.startswith("types[")}
    assert "invoice.payment_failed" in listed_types and "product.created" not in listed_types

    # The next run starts where this one ended.
    test_clock_module.advance(seconds=300)
    polling.poll_once()
    [*_, last] = stripe_api.requests_to("GET", "/v1/events")
    assert last.query["created[gt]"] == str(now - GRACE)
    assert StripeEventPoll.objects.get().listed_until == clock.from_unix(now + 300 - GRACE)


def test_a_young_event_is_left_to_its_webhook_until_the_grace_has_passed(stripe_api):
    polling.poll_once()  # nothing stored yet: the cursor starts now
    cus = StripeCustomer()
    missed = stripe_api.add_event(
        at(cus, -60).invoice_event("invoice.payment_failed", attempt_count=1)
    )

    report = test_clock_module.advance(seconds=GRACE)  # the event is 540 s old: still in grace
    assert report.ran["recovered_events"] == 0
    assert not WebhookEvent.objects.filter(stripe_event_id=missed["id"]).exists()

    report = test_clock_module.advance(seconds=120)  # an advance runs the backstop like beat does
    assert report.ran["recovered_events"] == 1
    assert report.ran["webhook_events"] == 1  # and processes what it recovered
    assert WebhookEvent.objects.get(stripe_event_id=missed["id"]).status == "processed"
    assert case_of(cus).is_open


def test_a_malformed_event_in_the_list_is_refused_like_a_webhook(stripe_api, caplog):
    polling.poll_once()
    cus = StripeCustomer()
    bad = at(cus, -60).invoice_event("invoice.payment_failed", attempt_count=1)
    bad["data"]["object"]["amount_due"] = "a lot"
    stripe_api.add_event(bad)

    with caplog.at_level(logging.WARNING, logger="billing_events.polling"):
        report = test_clock_module.advance(seconds=GRACE + 120)

    assert report.ran["recovered_events"] == 0
    assert not WebhookEvent.objects.filter(stripe_event_id=bad["id"]).exists()
    [refused] = [r.getMessage() for r in caplog.records if "poll_rejected" in r.getMessage()]
    assert "malformed invoice.payment_failed" in refused


def test_a_stripe_error_keeps_the_cursor_so_the_window_is_listed_again(stripe_api, settings):
    polling.poll_once()
    listed_until = StripeEventPoll.objects.get().listed_until
    settings.STRIPE_API_KEY = "sk_test_revoked"
    test_clock_module.advance(seconds=300)  # the advance goes on; the backstop failed

    report = polling.poll_once()

    assert report.skipped.startswith("Stripe answered with an error")
    assert StripeEventPoll.objects.get().listed_until == listed_until
    with pytest.raises(CommandError, match="AuthenticationError"):
        call_command("poll_stripe_events")


def test_off_without_an_api_key(settings, fake_stripe, test_clock):
    settings.STRIPE_API_KEY = ""
    settings.STRIPE_API_BASE = fake_stripe.url
    fake_stripe.add_event(
        at(StripeCustomer(), 3600).invoice_event("invoice.payment_failed", attempt_count=1)
    )

    assert polling.poll_once().skipped == "STRIPE_API_KEY is not set"
    assert test_clock_module.advance(seconds=3600).ran["recovered_events"] == 0
    assert fake_stripe.requests == []
    with pytest.raises(CommandError, match="STRIPE_API_KEY is not set"):
        call_command("poll_stripe_events")


def test_the_command_runs_one_poll(stripe_api, capsys):
    cus = StripeCustomer()
    WebhookEvent.objects.create(
        stripe_event_id="evt_seen",
        type="charge.failed",
        stripe_created=clock.now() - timedelta(hours=2),
        payload={},
        status="processed",
        received_at=clock.now(),
    )
    stripe_api.add_event(at(cus, 3600).invoice_event("invoice.payment_failed", attempt_count=1))

    call_command("poll_stripe_events")

    assert "listed 1, recovered 1" in capsys.readouterr().out


def test_beat_runs_the_backstop_on_a_configurable_period():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["poll-stripe-events"]
    assert entry["task"] == "billing_events.tasks.poll_stripe_events"
    assert entry["schedule"] == settings.STRIPE_EVENT_POLL_SECONDS
