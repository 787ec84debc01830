"""The end-to-end bench's own pieces: its load is what the webhook accepts, and its
percentile is the nearest-rank one its report claims."""

import json
import math

import pytest

from bench import e2e_events
from bench.common import percentile
from billing_events.models import WebhookEvent

SECRET = "whsec_test_current"  # config/test_settings.py's first secret


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (list(range(1, 101)), 50, 50),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 100, 100),
        ([3.0], 99, 3.0),
        ([2, 1], 50, 1),
        ([2, 1], 51, 2),
        ([5, 1, 4, 2, 3], 1, 1),
    ],
)
def test_percentile_is_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))


def test_every_account_lives_one_of_the_stories_with_ids_of_its_round():
    deliveries, types = e2e_events.build(tag="t1", accounts=18, seed=3, start=1_760_000_000)
    distinct = {event["id"]: event for event in deliveries}
    customers = {event["data"]["object"].get("customer") for event in distinct.values()}
    customers.discard(None)
    assert len(distinct) == sum(types.values())
    assert len(deliveries) == len(distinct) + len(distinct) // 5  # one in five again
    assert all(event_id.startswith("evt_t1_") for event_id in distinct)
    assert {c for c in customers if c.startswith("cus_t1n")} == customers
    assert len(customers) == 18
    for needed in ("customer.created", "invoice.payment_failed", "charge.failed", "invoice.paid"):
        assert types[needed] > 0


def test_two_rounds_never_share_an_event_or_a_customer():
    first, _ = e2e_events.build(tag="a", accounts=9, seed=1, start=1_760_000_000)
    second, _ = e2e_events.build(tag="b", accounts=9, seed=1, start=1_760_000_000)
    assert not {e["id"] for e in first} & {e["id"] for e in second}


@pytest.mark.django_db
def test_the_signed_records_are_accepted_by_the_webhook_and_stored_once(client, tmp_path):
    deliveries, types = e2e_events.build(tag="w", accounts=9, seed=2, start=1_760_000_000)
    records = tmp_path / "records.txt"
    e2e_events.write_records(records, deliveries, secret=SECRET)
    lines = records.read_bytes().splitlines()
    assert len(lines) == len(deliveries)
    for line in lines:
        header, body = line.split(b"\t", 1)
        answer = client.post(
            "/webhooks/stripe/",
            data=body,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=header.decode(),
        )
        assert answer.status_code == 200, answer.content
        assert json.loads(body)["id"].startswith("evt_w_")
    assert WebhookEvent.objects.count() == sum(types.values())
