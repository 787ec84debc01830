"""`manage.py backtest` on a stored history made by the simulator (a small book through the
real service, committed to the test database), and the rule that answers its retries.

The history fixture runs once per module; each backtest replays it twice in scratch
databases of its own (`backtest_<test database>_<side>`), so the test database keeps
exactly the history the simulator stored. The backtests run in module fixtures, outside any
test's transaction: making a scratch database switches the connection.
"""

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from billing_events import samples
from billing_events.models import Account, WebhookEvent
from dunning import models as dunning_models
from dunning.models import OutboxItem, PolicyVersion, SupportAction
from dunning.policy import current_policy
from dunning.policy_document import policy_to_document
from simulation.backtest.gateway import CLASS_RATE, HISTORY, Answer, answer
from simulation.backtest.history import Charge, StoredEvent
from simulation.backtest.independent import customer_and_signal
from simulation.backtest.outcomes import AccountOutcome
from simulation.backtest.report import per_rung
from simulation.generator import generate
from simulation.service import run_service
from simulation.service_run import START

pytestmark = pytest.mark.django_db
SINCE = START.date().isoformat()
T0 = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _clean() -> None:
    Account.objects.all().delete()  # cascades to every store the run wrote
    WebhookEvent.objects.all().delete()
    dunning_models.TestClock.objects.all().delete()


@pytest.fixture(scope="module")
def history(django_db_setup, django_db_blocker):
    """A book of 40 accounts over 60 days through the service, stored as it ran."""
    with django_db_blocker.unblock():
        _clean()
        run_service(generate(accounts=40, days=60, seed=3))
        yield
        _clean()


def _backtest(django_db_blocker, tmp_path, document: dict, name: str, **options) -> dict:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(document))
    report = tmp_path / f"{name}-report.json"
    html = tmp_path / f"{name}-report.html"
    with django_db_blocker.unblock():
        call_command(
            "backtest",
            policy=str(path),
            since=SINCE,
            json_path=str(report),
            html_path=str(html),
            **options,
        )
    return json.loads(report.read_text())


def _document() -> dict:
    return policy_to_document(current_policy())


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("backtest")


@pytest.fixture(scope="module")
def same(history, django_db_blocker, module_tmp) -> dict:
    return _backtest(django_db_blocker, module_tmp, _document(), "same")


def test_the_same_policy_as_candidate_changes_no_account(same):
    assert same["changed"] == {"accounts": 0, "how": {}}
    assert same["accounts"] == []
    assert same["totals"]["active"] == same["totals"]["candidate"]
    assert same["retry_answers"]["active"] == same["retry_answers"]["candidate"]


def test_the_active_replay_makes_the_retries_the_history_made(same, django_db_blocker):
    """The replay is faithful: under the policy that made the history, it retries what the
    service retried, and Stripe's answers come from that history."""
    until = datetime.fromisoformat(same["window"]["until"])
    with django_db_blocker.unblock():
        made = OutboxItem.objects.filter(
            kind=OutboxItem.Kind.PAYMENT_RETRY,
            status=OutboxItem.Status.DONE,
            completed_at__lte=until,
        ).count()
    assert made > 0
    assert same["totals"]["active"]["retries"] == made
    assert same["retry_answers"]["active"] == {HISTORY: made}
    assert same["events"]["left_out_caused_by_the_service"] > 0
    assert same["replays"]["active"]["answers_by_status"] == {
        "200": same["replays"]["active"]["events_posted"]
    }


@pytest.fixture(scope="module")
def one_retry(history, django_db_blocker, module_tmp) -> dict:
    return _backtest(django_db_blocker, module_tmp, _one_retry_document(), "one-retry", jobs=2)


def _one_retry_document() -> dict:
    document = _document()
    document["retries"]["schedules_days"]["soft"] = [1]
    return document


@pytest.fixture(scope="module")
def one_retry_one_process(history, django_db_blocker, module_tmp) -> dict:
    return _backtest(django_db_blocker, module_tmp, _one_retry_document(), "seq", jobs=1)


@pytest.fixture(scope="module")
def one_retry_every_account(history, django_db_blocker, module_tmp) -> dict:
    return _backtest(
        django_db_blocker, module_tmp, _one_retry_document(), "every", every_account=True
    )


def _same_candidate(report: dict) -> dict:
    """The report, a copy, without the candidate document's file name (one per run)."""
    report = copy.deepcopy(report)
    assert report["policies"].pop("candidate").endswith(".json")
    return report


def test_the_two_replays_at_once_report_what_one_after_the_other_does(
    one_retry, one_retry_one_process
):
    assert one_retry["changed"]["accounts"] > 0
    assert _same_candidate(one_retry) == _same_candidate(one_retry_one_process)


def test_leaving_out_the_accounts_no_policy_can_change_changes_no_figure(
    one_retry, one_retry_every_account, django_db_blocker
):
    """The shortcut leaves accounts and events out of both replays and the report is the
    same, account by account, explanations included; only the event counts say so."""
    fast, full = _same_candidate(one_retry), _same_candidate(one_retry_every_account)
    left_out = fast.pop("events").pop("left_out_no_policy_can_change")
    everything = full.pop("events")
    assert everything.pop("left_out_no_policy_can_change") == {"accounts": 0, "events": 0}
    assert left_out["accounts"] > 0 and left_out["events"] > 0
    with django_db_blocker.unblock():
        accounts = Account.objects.count()
    assert left_out["accounts"] < accounts
    assert fast["totals"]["active"]["accounts"] == accounts
    assert everything["replayed"] == one_retry["events"]["replayed"] + left_out["events"]
    assert everything["stored"] == one_retry["events"]["stored"]
    for side in ("active", "candidate"):
        posted = full["replays"][side].pop("events_posted")
        assert fast["replays"][side].pop("events_posted") == posted - left_out["events"]
        full["replays"][side].pop("answers_by_status")
        fast["replays"][side].pop("answers_by_status")
    assert fast == full


@pytest.fixture(scope="module")
def longer_grace(history, django_db_blocker, module_tmp) -> dict:
    document = _document()
    for rungs in document["ladders"].values():
        for rung in rungs:
            if rung["starts_after_days"] > 0:
                rung["starts_after_days"] += 7
    return _backtest(django_db_blocker, module_tmp, document, "grace")


def test_one_soft_retry_loses_recoveries(one_retry, same, module_tmp):
    report = one_retry
    assert report["changed"]["accounts"] > 0
    page = (module_tmp / "one-retry-report.html").read_text()
    assert all(f"<code>{a['customer']}</code>" in page for a in report["accounts"])
    for account in report["accounts"]:
        changes = account["changes"]
        if "retries" in changes:
            assert changes["retries"][1] < changes["retries"][0]
        if "recovered" in changes:
            assert sum(changes["recovered"][1].values()) < sum(changes["recovered"][0].values())
        assert account["active"]["summary"] and account["candidate"]["summary"]
    assert report["changed"]["how"].get("recovered: less", 0) > 0
    assert "recovered: more" not in report["changed"]["how"]
    assert report["totals"]["candidate"]["retries"] < report["totals"]["active"]["retries"]
    assert report["totals"]["active"] == same["totals"]["active"]


def test_a_longer_grace_restricts_fewer_days(longer_grace):
    report = longer_grace
    assert report["changed"]["accounts"] > 0
    assert report["changed"]["how"].get("days_restricted: fewer", 0) > 0
    assert "days_restricted: more" not in report["changed"]["how"]
    assert "highest_rung: higher" not in report["changed"]["how"]
    totals = report["totals"]
    assert totals["candidate"]["days_restricted"] < totals["active"]["days_restricted"]


def _configured_database_state() -> tuple:
    return (
        WebhookEvent.objects.count(),
        PolicyVersion.objects.count(),
        SupportAction.objects.count(),
        OutboxItem.objects.count(),
    )


def _scratch_databases() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backtest_%%'")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("7", "no stored policy version 7"),
        ("invalid", "not a valid policy document: ladders.base"),
        ("not-json", "not a JSON document"),
        ("/nonexistent/policy.json", "neither a version number nor a file"),
    ],
)
def test_a_bad_policy_is_refused_and_nothing_is_written(history, tmp_path, policy, message):
    if policy == "invalid":
        document = _document()
        document["ladders"]["base"][1]["starts_after_days"] = 100  # the ladder must climb
        (tmp_path / "invalid.json").write_text(json.dumps(document))
        policy = str(tmp_path / "invalid.json")
    elif policy == "not-json":
        (tmp_path / "bad.json").write_text("{not json")
        policy = str(tmp_path / "bad.json")
    before, scratch = _configured_database_state(), _scratch_databases()
    with pytest.raises(CommandError, match=message):
        call_command("backtest", policy=policy, since=SINCE)
    assert _configured_database_state() == before
    assert _scratch_databases() == scratch


def test_an_empty_window_is_refused(history, tmp_path):
    path = tmp_path / "same.json"
    path.write_text(json.dumps(_document()))
    scratch = _scratch_databases()
    with pytest.raises(CommandError, match="no stored events"):
        call_command("backtest", policy=str(path), since="2031-01-01")
    assert _scratch_databases() == scratch


# The rule answering a replay's retries --------------------------------------------------

FAILED_THEN_PAID = [Charge(T0, False, "insufficient_funds"), Charge(T0 + 48 * H, True)]
FAILED_TWICE = [Charge(T0, False, "do_not_honor"), Charge(T0 + 24 * H, False, "insufficient_funds")]


@pytest.mark.parametrize(
    ("charges", "at", "rate", "expected"),
    [
        # A charge succeeded at or before the retry: it succeeds.
        (FAILED_THEN_PAID, T0 + 48 * H, 0.0, Answer(True, "", HISTORY)),
        (FAILED_THEN_PAID, T0 + 72 * H, 0.0, Answer(True, "", HISTORY)),
        # A later charge failed: so does this one, with that charge's code.
        (FAILED_TWICE, T0 + 12 * H, 1.0, Answer(False, "insufficient_funds", HISTORY)),
        (FAILED_TWICE, T0 + 24 * H, 1.0, Answer(False, "insufficient_funds", HISTORY)),
        # Between the last failure and the success, or after the last failure: the rate.
        (FAILED_THEN_PAID, T0 + 24 * H, 1.0, Answer(True, "", CLASS_RATE)),
        (FAILED_THEN_PAID, T0 + 24 * H, 0.0, Answer(False, "insufficient_funds", CLASS_RATE)),
        (FAILED_TWICE, T0 + 36 * H, 0.0, Answer(False, "insufficient_funds", CLASS_RATE)),
        ([], T0, 0.0, Answer(False, "generic_decline", CLASS_RATE)),
    ],
)
def test_a_retry_is_answered_from_history_where_it_knows(charges, at, rate, expected):
    assert answer(charges, at, rate=rate, invoice_id="in_1", attempt=2) == expected


def test_a_retry_answered_from_the_rate_is_the_same_every_run():
    answers = {
        answer([], T0, rate=0.5, invoice_id=f"in_{n}", attempt=2).succeeded for n in range(40)
    }
    assert answers == {True, False}
    again = [answer([], T0, rate=0.5, invoice_id=f"in_{n}", attempt=2) for n in range(40)]
    assert again == [answer([], T0, rate=0.5, invoice_id=f"in_{n}", attempt=2) for n in range(40)]


def test_a_stored_version_is_a_candidate_and_the_active_one_is_compared(history):
    from dunning import policy_versions
    from simulation.backtest.policies import active_document, candidate_document

    assert active_document() == (_document(), "the code default (no version stored)")
    document = _document()
    document["retries"]["schedules_days"]["soft"] = [1, 2]
    version = policy_versions.create_version(document=document, author="t", reason="try")
    assert candidate_document(str(version.number)) == (document, f"stored version {version.label}")
    policy_versions.activate(number=version.number, actor="t", reason="go")
    assert active_document() == (document, f"stored version {version.label} (active)")
    policy_versions.forget_cache()


@pytest.mark.parametrize(
    ("highest", "expected"),
    [
        ([], {}),
        (["", "none"], {}),
        (["notice", "notice"], {"notice": 2}),
        (
            ["premium_restricted", "notice", ""],
            {"notice": 2, "upgrade_restricted": 1, "upgrade_reverted": 1, "premium_restricted": 1},
        ),
    ],
)
def test_a_rung_counts_every_account_that_reached_it_or_beyond(highest, expected):
    outcomes = {
        f"cus_{n}": AccountOutcome(f"cus_{n}", highest_rung=h) for n, h in enumerate(highest)
    }
    assert per_rung(outcomes) == expected


# Which stored events could put an account's invoice through dunning ---------------------

TS = int(T0.timestamp())


def _stored(type_: str, obj: dict) -> StoredEvent:
    body = json.dumps(samples.event(type_, obj, created=TS))
    return StoredEvent(f"evt_{type_}", type_, T0, T0, body)


def _invoice(**fields) -> dict:
    return samples.invoice(id="in_1", customer="cus_1", created=TS, **fields)


@pytest.mark.parametrize(
    ("type_", "obj", "could"),
    [
        ("invoice.paid", _invoice(status="paid", attempt_count=1), False),
        ("invoice.finalized", _invoice(status="open", attempt_count=0), False),
        ("invoice.paid", _invoice(status="paid", attempt_count=2), True),
        ("invoice.updated", _invoice(status="open", attempt_count=1), True),
        ("invoice.payment_failed", _invoice(status="open", attempt_count=1), True),
        ("invoice.marked_uncollectible", _invoice(status="uncollectible", attempt_count=0), True),
        ("invoice.voided", _invoice(status="void", attempt_count=3), True),
        ("charge.failed", samples.charge(id="ch_1", customer="cus_1", created=TS), True),
        (
            "charge.succeeded",
            samples.charge(id="ch_1", customer="cus_1", created=TS, status="succeeded"),
            False,
        ),
        ("customer.updated", samples.customer(id="cus_1", created=TS), False),
    ],
)
def test_an_account_is_left_out_only_when_no_event_could_open_a_case(type_, obj, could):
    assert customer_and_signal(_stored(type_, obj)) == ("cus_1", could)


def test_an_event_about_no_customer_is_always_replayed():
    obj = samples.charge(id="ch_1", customer="cus_1", created=TS, status="succeeded")
    obj["customer"] = None
    assert customer_and_signal(_stored("charge.succeeded", obj)) == ("", True)
