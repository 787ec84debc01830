"""The webhook event log keeps only the indexes its queries use (issue #16), each query
still finds its index on a table of realistic shape, and the ingest still answers as it
did: the signed bytes stored verbatim, duplicates once, rejections with nothing stored."""

import json
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing_events import samples
from billing_events.metrics import WebhookEventCollector
from billing_events.models import Account, WebhookEvent
from core import clock
from dunning import drift
from dunning.intake import processing
from dunning.support_api.selectors import account_timeline
from dunning.test_clock import _next_due_after
from tests.conftest import SECRET

pytestmark = pytest.mark.django_db

TABLE = WebhookEvent._meta.db_table
ACCOUNTS = 1000
EVENTS = 20_000


def test_the_event_log_has_only_the_indexes_its_queries_use():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [TABLE])
        names = {name for (name,) in cursor.fetchall()}

    assert names == {
        "billing_events_webhookevent_pkey",
        "billing_events_webhookevent_stripe_event_id_key",
        "webhook_event_due_idx",
        "webhook_event_processed_at_idx",
        "webhook_event_account_idx",
    }


@pytest.fixture
def event_log() -> list[int]:
    """27 days of events over 1,000 accounts: mostly processed, 1% due now, 1% failed and
    waiting, 1% ignored without an account. Returns the account ids."""
    accounts = Account.objects.bulk_create(
        Account(stripe_customer_id=f"cus_fill_{n}") for n in range(ACCOUNTS)
    )
    first = accounts[0].pk
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (stripe_event_id, type, stripe_created, livemode, raw_body,"
            " status, attempts, last_error, next_attempt_at, received_at, processed_at,"
            " account_id, recovered_by_polling)"
            " SELECT 'evt_fill_' || n,"
            "  CASE WHEN n %% 5 = 0 THEN 'customer.updated' ELSE 'invoice.payment_failed' END,"
            "  now() - n * interval '2 minutes', false, '{}',"
            "  CASE n %% 100 WHEN 0 THEN 'received' WHEN 1 THEN 'failed' WHEN 2 THEN 'ignored'"
            "   ELSE 'processed' END,"
            "  1, '',"
            "  CASE n %% 100 WHEN 0 THEN now() - interval '1 minute'"
            "   WHEN 1 THEN now() + interval '10 minutes' END,"
            "  now() - n * interval '2 minutes',"
            "  CASE WHEN n %% 100 > 2 THEN now() - n * interval '2 minutes' END,"
            "  CASE WHEN n %% 100 > 2 THEN %s + n %% %s END,"
            "  false"
            " FROM generate_series(1, %s) AS n",
            [first, ACCOUNTS, EVENTS],
        )
        cursor.execute(f"ANALYZE {TABLE}")
        cursor.execute("ANALYZE billing_events_account")
    return [account.pk for account in accounts]


def scans_of_the_event_log(run) -> list[tuple[str, str | None]]:
    """(node type, index) of every scan of the event log in the plans of the statements
    `run` sends to it, as PostgreSQL would run them."""
    with CaptureQueriesContext(connection) as captured:
        run()
    statements = [q["sql"] for q in captured.captured_queries if f'"{TABLE}"' in q["sql"]]
    assert statements, "the code under test sent no statement to the event log"
    scans = []
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
            scans += list(_scans(json.loads(_text(cursor.fetchone()[0]))[0]["Plan"]))
    return scans


def _text(plan) -> str:
    return plan if isinstance(plan, str) else json.dumps(plan)


def _scans(node: dict):
    if node.get("Relation Name") == TABLE or node.get("Index Name", "").startswith(
        ("webhook_event_", "billing_events_webhookevent_")
    ):
        yield node["Node Type"], node.get("Index Name")
    for child in node.get("Plans", []):
        yield from _scans(child)


def uses_only(scans: list[tuple[str, str | None]], index: str) -> bool:
    return bool(scans) and all(name == index for node, name in scans if node != "ModifyTable")


def test_the_pump_claims_due_events_through_the_due_index(event_log):
    scans = scans_of_the_event_log(lambda: processing.claim_due(limit=50))

    assert ("Index Scan", "webhook_event_due_idx") in scans
    assert not any(node == "Seq Scan" for node, _ in scans)


def test_the_test_clock_finds_the_next_due_event_through_the_due_index(event_log):
    scans = scans_of_the_event_log(lambda: _next_due_after(clock.now()))

    assert uses_only(scans, "webhook_event_due_idx"), scans


def test_drift_reads_recently_processed_events_through_the_processed_index(event_log):
    since = clock.now() - timedelta(hours=1)

    scans = scans_of_the_event_log(lambda: drift.candidates(since=since))

    assert uses_only(scans, "webhook_event_processed_at_idx"), scans


def test_metrics_read_the_last_hour_of_processing_through_the_processed_index(event_log):
    scans = scans_of_the_event_log(lambda: list(WebhookEventCollector(now=clock.now).collect()))

    # The per-type totals count every row (a full scan by nature); the latency window
    # must not.
    assert ("Index Scan", "webhook_event_processed_at_idx") in scans or (
        "Bitmap Index Scan",
        "webhook_event_processed_at_idx",
    ) in scans, scans


def test_drift_guard_reads_one_accounts_recent_events_through_the_account_index(event_log):
    scans = scans_of_the_event_log(lambda: drift.guarded(account_id=event_log[7], now=clock.now()))

    assert any(name == "webhook_event_account_idx" for _, name in scans), scans
    assert not any(node == "Seq Scan" for node, _ in scans)


def test_the_support_timeline_reads_one_accounts_events_through_the_account_index(event_log):
    scans = scans_of_the_event_log(lambda: account_timeline(account_id=event_log[7]))

    assert any(name == "webhook_event_account_idx" for _, name in scans), scans
    assert not any(node == "Seq Scan" for node, _ in scans)


def test_deleting_an_account_unlinks_its_events_through_the_account_index(event_log):
    scans = scans_of_the_event_log(lambda: Account.objects.filter(pk=event_log[7]).delete())

    assert any(name == "webhook_event_account_idx" for _, name in scans), scans
    assert not any(node == "Seq Scan" for node, _ in scans)
    assert not WebhookEvent.objects.filter(account_id=event_log[7]).exists()


def test_polling_finds_known_events_through_the_unique_event_id(event_log):
    # The query polling.poll_once runs on each page Stripe lists.
    def known():
        ids = [f"evt_fill_{n}" for n in range(1, 101)]
        list(WebhookEvent.objects.filter(stripe_event_id__in=ids).values_list("stripe_event_id"))

    scans = scans_of_the_event_log(known)

    assert uses_only(scans, "billing_events_webhookevent_stripe_event_id_key"), scans


# --- the ingest's behaviour through the new INSERT ------------------------------------------
def post(client, payload: bytes, *, secret: str = SECRET):
    header = samples.sign_header(payload=payload, secret=secret, timestamp=int(time.time()))
    return client.post(
        "/webhooks/stripe/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )  # fmt: skip


def stripe_formatted_event(event_id: str) -> bytes:
    """As Stripe sends it: pretty-printed, non-ASCII as UTF-8, some of it escaped."""
    now = int(time.time())
    invoice = samples.invoice(id="in_bytes", customer="cus_bytes", created=now, attempt_count=1)
    invoice["customer_name"] = "Zoë Ångström 😀"
    invoice["description"] = "caf\u00e9"
    event = samples.event("invoice.payment_failed", invoice, created=now, id=event_id)
    text = json.dumps(event, indent=2, ensure_ascii=False)
    return text.replace('"caf\u00e9"', '"caf\\u00e9"').encode()


def test_the_signed_bytes_are_stored_verbatim_and_a_duplicate_once(client):
    payload = stripe_formatted_event("evt_bytes_1")

    first, second = post(client, payload), post(client, payload)

    assert first.status_code == 200 and first.json() == {"received": True, "status": "received"}
    assert second.status_code == 200 and second.json()["duplicate"] is True
    stored = WebhookEvent.objects.get()
    assert stored.raw_body.encode() == payload
    assert stored.payload["data"]["object"]["customer_name"] == "Zoë Ångström 😀"
    assert stored.next_attempt_at is not None  # due: the pump hands it out


@pytest.mark.parametrize(
    "payload, secret, status",
    [
        (b'{"id": "evt_bad", "type": ', SECRET, 400),  # not JSON
        (b'{"id": "evt_\xff", "type": "x"}', SECRET, 400),  # not UTF-8
        (b'{"id": "evt_x\\u0000", "type": "invoice.paid"}', SECRET, 400),  # NUL
        (b'{"id": "evt_sig"}', "whsec_someone_else", 400),  # not signed by Stripe
        (b'{"id": "evt_big", "pad": "' + b"x" * 600_000 + b'"}', SECRET, 413),
    ],
)
def test_a_rejected_body_stores_nothing(client, payload, secret, status):
    assert post(client, payload, secret=secret).status_code == status
    assert not WebhookEvent.objects.exists()


def test_an_ignored_type_is_stored_but_never_due(client):
    now = int(time.time())
    plan = samples.sample("event")["data"]["object"]  # Stripe's own example object
    event = samples.event("plan.created", plan, created=now, id="evt_ignored")

    response = post(client, json.dumps(event).encode())

    assert response.json() == {"received": True, "status": "ignored"}
    stored = WebhookEvent.objects.get()
    assert stored.next_attempt_at is None
    assert processing.claim_due(limit=10) == []
