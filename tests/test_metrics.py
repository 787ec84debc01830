"""/metrics: Prometheus exposition read from the database at scrape time."""

from datetime import timedelta
from itertools import count
from unittest import mock

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from billing_events.models import Account, WebhookEvent
from dunning import policy_versions
from dunning.metrics import DunningCollector
from dunning.models import BadDebtEpisode, CustomerNotice, Decision, DunningCase, OutboxItem
from dunning.policy import current_policy
from dunning.policy_document import policy_to_document

pytestmark = pytest.mark.django_db

_ids = count(1)


def scrape(client, **headers) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def account() -> Account:
    return Account.objects.create(stripe_customer_id=f"cus_metrics_{next(_ids)}")


def event(event_type: str, status: str, received_at, processed_at=None) -> WebhookEvent:
    return WebhookEvent.objects.create(
        stripe_event_id=f"evt_metrics_{next(_ids)}",
        type=event_type,
        stripe_created=received_at,
        payload={},
        status=status,
        received_at=received_at,
        processed_at=processed_at,
    )


def case(state: str, level: str, opened_at, acct: Account | None = None) -> DunningCase:
    return DunningCase.objects.create(
        account=acct or account(),
        state=state,
        level=level,
        opened_at=opened_at,
        policy_version="test",
    )


def decide(dunning_case: DunningCase, at) -> None:
    decision = Decision.objects.create(
        account=dunning_case.account,
        case=dunning_case,
        trigger="TIME_PASSED",
        actor="test",
        decided_at=at,
        policy_version="test",
        changes=[],
        explanation={},
        summary="",
    )
    DunningCase.objects.filter(pk=dunning_case.pk).update(last_decision=decision)


def outbox(kind: str, status: str, due, *, result=None, completed_at=None, acct=None):
    return OutboxItem.objects.create(
        account=acct or account(),
        kind=kind,
        key=f"metrics:{next(_ids)}",
        status=status,
        next_attempt_at=due,
        created_at=due - timedelta(minutes=5),
        completed_at=completed_at,
        result=result or {},
    )


def test_an_empty_database_scrapes_with_zeros(client, test_clock):
    samples = scrape(client)

    assert value(samples, "dunning_cases_stuck_in_lifting") == 0
    assert value(samples, "dunning_outbox_pending", kind="payment_retry") == 0
    assert value(samples, "dunning_outbox_oldest_due_age_seconds", kind="outcome_event") == 0
    assert value(samples, "dunning_bad_debt_accounts", reason="marked_uncollectible") == 0
    assert value(samples, "dunning_webhook_processing_latency_seconds_bucket", le="+Inf") == 0
    assert value(samples, "dunning_webhook_processing_latency_seconds_gcount") == 0


def test_webhook_events_by_type_and_status_and_the_latency_histogram(client, test_clock):
    now = test_clock
    failed_type, other = "invoice.payment_failed", "invoice.paid"

    def processed(event_type, ago, latency_seconds):
        received = now - ago
        event(event_type, "processed", received, received + timedelta(seconds=latency_seconds))

    processed(failed_type, timedelta(minutes=5), 0.03)
    processed(failed_type, timedelta(minutes=9), 2)
    processed(failed_type, timedelta(hours=2), 100)  # counted, but before the latency window
    event(failed_type, "failed", now - timedelta(minutes=1))
    event(failed_type, "dead", now - timedelta(days=1))
    event(other, "received", now - timedelta(seconds=5))
    processed(other, timedelta(minutes=30), 45)
    event("charge.refunded", "ignored", now - timedelta(minutes=3))

    samples = scrape(client)

    assert value(samples, "dunning_webhook_events_ingested_total", type=failed_type) == 5
    assert value(samples, "dunning_webhook_events_processed_total", type=failed_type) == 3
    assert value(samples, "dunning_webhook_events_failed", type=failed_type) == 1
    assert value(samples, "dunning_webhook_events_dead_total", type=failed_type) == 1
    assert value(samples, "dunning_webhook_events_ignored_total", type=failed_type) == 0
    assert value(samples, "dunning_webhook_events_ingested_total", type=other) == 2
    assert value(samples, "dunning_webhook_events_received", type=other) == 1
    assert value(samples, "dunning_webhook_events_ignored_total", type="charge.refunded") == 1

    bucket = "dunning_webhook_processing_latency_seconds_bucket"
    assert value(samples, bucket, le="0.05") == 1  # 30 ms
    assert value(samples, bucket, le="1.0") == 1
    assert value(samples, bucket, le="2.5") == 2  # 2 s
    assert value(samples, bucket, le="30.0") == 2
    assert value(samples, bucket, le="60.0") == 3  # 45 s
    assert value(samples, bucket, le="300.0") == 3
    assert value(samples, bucket, le="+Inf") == 3  # the 100 s one is two hours old
    assert value(samples, "dunning_webhook_processing_latency_seconds_gcount") == 3
    assert value(samples, "dunning_webhook_processing_latency_seconds_gsum") == pytest.approx(47.03)


def test_cases_by_state_and_level_and_stuck_in_lifting(client, test_clock, settings):
    now = test_clock
    settings.LIFTING_STUCK_AFTER_SECONDS = 3600
    case("retrying", "notice", now - timedelta(days=3))
    case("retrying", "notice", now - timedelta(days=1))
    case("escalated", "suspended", now - timedelta(days=40))
    case("resolved", "none", now - timedelta(days=60))
    decided_long_ago = case("lifting", "notice", now - timedelta(days=5))
    decide(decided_long_ago, now - timedelta(hours=2))
    decided_recently = case("lifting", "notice", now - timedelta(days=5))
    decide(decided_recently, now - timedelta(minutes=10))
    case("lifting", "read_only", now - timedelta(hours=3))  # no decision: opened 3 h ago
    case("lifting", "read_only", now - timedelta(minutes=3))  # no decision, just opened

    samples = scrape(client)

    assert value(samples, "dunning_cases", state="retrying", level="notice") == 2
    assert value(samples, "dunning_cases", state="escalated", level="suspended") == 1
    assert value(samples, "dunning_cases", state="resolved", level="none") == 1
    assert value(samples, "dunning_cases", state="lifting", level="notice") == 2
    assert value(samples, "dunning_cases", state="lifting", level="read_only") == 2
    assert value(samples, "dunning_cases_stuck_in_lifting") == 2

    settings.LIFTING_STUCK_AFTER_SECONDS = 60
    assert value(scrape(client), "dunning_cases_stuck_in_lifting") == 4


def test_payment_retries_by_decline_class_and_outcome(client, test_clock):
    now = test_clock
    retry = OutboxItem.Kind.PAYMENT_RETRY

    def declined(code):
        return {"detail": f"declined ({code})", "outcome": "declined", "decline_code": code}

    outbox(retry, "done", now, result=declined("insufficient_funds"))
    outbox(retry, "done", now, result=declined("insufficient_funds"))
    outbox(retry, "done", now, result=declined("approve_with_id"))  # soft too
    outbox(retry, "done", now, result=declined("stolen_card"))
    outbox(retry, "done", now, result=declined("expired_card"))
    outbox(retry, "done", now, result={"outcome": "succeeded", "decline_code": None})
    outbox(retry, "dead", now)  # the gateway refused the call
    outbox(retry, "pending", now + timedelta(days=1))  # not run yet
    outbox(retry, "superseded", now)  # never run
    outbox(OutboxItem.Kind.ACCOUNT_STANDING, "done", now, result={"outcome": "declined"})

    samples = scrape(client)
    name = "dunning_payment_retries_total"

    assert samples[name] == {
        (("decline_class", "soft"), ("outcome", "declined")): 3,
        (("decline_class", "fraud"), ("outcome", "declined")): 1,
        (("decline_class", "hard"), ("outcome", "declined")): 1,
        (("decline_class", "none"), ("outcome", "succeeded")): 1,
        (("decline_class", "none"), ("outcome", "error")): 1,
    }


def test_bad_debt_entries_exits_and_accounts_in_bad_debt(client, test_clock):
    now = test_clock

    def episode(reason, exit_reason="", exited=False):
        acct = account()
        dunning_case = case("escalated", "suspended", now - timedelta(days=40), acct)
        BadDebtEpisode.objects.create(
            account=acct,
            case=dunning_case,
            reason=reason,
            entered_at=now - timedelta(days=10),
            exited_at=now - timedelta(days=1) if exited else None,
            exit_reason=exit_reason,
        )

    episode("marked_uncollectible")
    episode("marked_uncollectible")
    episode("marked_uncollectible", "written_off", exited=True)
    episode("ladder_suspended", "paid", exited=True)
    episode("ladder_suspended", "paid", exited=True)
    episode("ladder_suspended")

    samples = scrape(client)

    entries = "dunning_bad_debt_entries_total"
    assert value(samples, entries, reason="marked_uncollectible") == 3
    assert value(samples, entries, reason="ladder_suspended") == 3
    assert samples["dunning_bad_debt_exits_total"] == {
        (("exit_reason", "paid"),): 2,
        (("exit_reason", "written_off"),): 1,
    }
    assert value(samples, "dunning_bad_debt_accounts", reason="marked_uncollectible") == 2
    assert value(samples, "dunning_bad_debt_accounts", reason="ladder_suspended") == 1


def test_outbox_backlog_age_and_completion_delay(client, test_clock):
    now = test_clock
    standing, outcome = OutboxItem.Kind.ACCOUNT_STANDING, OutboxItem.Kind.OUTCOME_EVENT
    outbox(standing, "pending", now - timedelta(seconds=120))
    outbox(standing, "pending", now - timedelta(seconds=30))
    outbox(standing, "pending", now + timedelta(hours=1))  # not due yet
    outbox(outcome, "pending", now + timedelta(minutes=5))
    outbox(outcome, "dead", now - timedelta(days=1))  # not pending
    due = now - timedelta(minutes=10)
    outbox(standing, "done", due, completed_at=due + timedelta(seconds=0.2))
    outbox(standing, "done", due, completed_at=due + timedelta(seconds=7))
    outbox(outcome, "done", due, completed_at=due + timedelta(seconds=0.04))
    outbox(outcome, "done", now - timedelta(hours=3), completed_at=now - timedelta(hours=2))

    samples = scrape(client)

    assert value(samples, "dunning_outbox_pending", kind="account_standing") == 3
    assert value(samples, "dunning_outbox_due", kind="account_standing") == 2
    assert value(samples, "dunning_outbox_oldest_due_age_seconds", kind="account_standing") == 120
    assert value(samples, "dunning_outbox_pending", kind="outcome_event") == 1
    assert value(samples, "dunning_outbox_due", kind="outcome_event") == 0
    assert value(samples, "dunning_outbox_oldest_due_age_seconds", kind="outcome_event") == 0
    assert value(samples, "dunning_outbox_pending", kind="payment_retry") == 0

    delay = "dunning_outbox_completion_delay_seconds"
    assert value(samples, f"{delay}_bucket", kind="account_standing", le="0.25") == 1
    assert value(samples, f"{delay}_bucket", kind="account_standing", le="10.0") == 2
    assert value(samples, f"{delay}_gcount", kind="account_standing") == 2
    assert value(samples, f"{delay}_gsum", kind="account_standing") == pytest.approx(7.2)
    assert value(samples, f"{delay}_bucket", kind="outcome_event", le="0.05") == 1
    assert value(samples, f"{delay}_gcount", kind="outcome_event") == 1  # one in the hour


def _populate(n: int, now) -> None:
    for _ in range(n):
        acct = account()
        event(f"type.{next(_ids) % 7}", "processed", now - timedelta(minutes=2), now)
        lifting = case("lifting", "notice", now - timedelta(hours=3), acct)
        decide(lifting, now - timedelta(hours=2))
        outbox(OutboxItem.Kind.OUTCOME_EVENT, "pending", now - timedelta(seconds=5), acct=acct)
        outbox(
            OutboxItem.Kind.PAYMENT_RETRY,
            "done",
            now,
            result={"outcome": "declined", "decline_code": f"code_{next(_ids) % 5}"},
            acct=acct,
        )
        BadDebtEpisode.objects.create(
            account=acct, case=lifting, reason="ladder_suspended", entered_at=now
        )
        CustomerNotice.objects.create(
            account=acct,
            case=lifting,
            key=f"payment_failed:inv{next(_ids)}:soft",
            kind="payment_failed",
            status="sent",
            channel="email",
            due_at=now,
            created_at=now,
        )


def test_a_scrape_costs_a_constant_number_of_queries(
    client, test_clock, django_assert_max_num_queries
):
    _populate(2, test_clock)
    with CaptureQueriesContext(connection) as few:
        scrape(client)
    _populate(60, test_clock)
    with CaptureQueriesContext(connection) as many:
        scrape(client)

    assert len(many) == len(few)
    # 13 aggregate reads (the test clock's included), the active policy version's number,
    # the savepoint, its release and the statement timeout.
    with django_assert_max_num_queries(17):
        scrape(client)


def test_a_token_protects_metrics_when_set(client, settings, monkeypatch):
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    settings.METRICS_TOKEN = "s3cret-scrape-token"

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-scrape-token").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3crét").status_code == 401
    denied = client.get("/metrics")
    assert denied["WWW-Authenticate"].startswith("Bearer")
    assert b"dunning_" not in denied.content
    scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")


def test_the_token_comes_from_the_environment(client, settings, monkeypatch):
    if hasattr(settings, "METRICS_TOKEN"):
        del settings.METRICS_TOKEN
    monkeypatch.setenv("METRICS_TOKEN", "from-env")
    assert client.get("/metrics").status_code == 401
    scrape(client, HTTP_AUTHORIZATION="Bearer from-env")

    monkeypatch.delenv("METRICS_TOKEN")
    scrape(client)  # no token configured: open (scraped from inside the network)


def test_only_get(client):
    assert client.post("/metrics").status_code == 405


def test_a_slow_or_failing_database_answers_503(client):
    with mock.patch.object(
        DunningCollector,
        "_cases",
        side_effect=OperationalError("canceling statement due to timeout"),
    ):
        response = client.get("/metrics")
    assert response.status_code == 503


def test_the_scrape_runs_under_a_statement_timeout(client, settings):
    settings.METRICS_STATEMENT_TIMEOUT_MS = 1234
    with CaptureQueriesContext(connection) as queries:
        scrape(client)
    assert any("statement_timeout = 1234" in query["sql"] for query in queries)


def test_payment_retries_are_classified_by_the_active_policy_version(client, test_clock):
    """A team that reclassifies a code (here insufficient_funds as hard) sees its retries
    counted under the new class once that version is active, not under the code default."""
    retry = OutboxItem.Kind.PAYMENT_RETRY
    answer = {"outcome": "declined", "decline_code": "insufficient_funds"}
    outbox(retry, "done", test_clock, result=answer)
    name = "dunning_payment_retries_total"
    soft = (("decline_class", "soft"), ("outcome", "declined"))
    hard = (("decline_class", "hard"), ("outcome", "declined"))
    policy_versions.forget_cache()
    try:
        assert scrape(client)[name] == {soft: 1}

        document = policy_to_document(current_policy())
        document["decline_classes"]["insufficient_funds"] = "hard"
        version = policy_versions.create_version(document=document, author="t", reason="r")
        policy_versions.activate(number=version.number, actor="t", reason="reclassify")

        assert scrape(client)[name] == {hard: 1}
    finally:
        policy_versions.forget_cache()
