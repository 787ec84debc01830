"""The simulator's report, checked on seeded runs through the real service.

One run per fixture (module scope: a run takes tens of seconds), committed to the test
database and deleted afterwards. The stress mix has more failures, upgrades and hard and
fraud declines than the defaults, so that a small book shows every fault the legacy model
models: if the legacy side showed none, the comparison would prove nothing.

The hard cases (an upgrade invoice Stripe writes off, charge events late or never sent,
invoices first seen when already old) are in the default mix; the stress and gaps runs
switch them off, so that those runs keep the books their claims were measured on, and the
default-mix run below meets them, and the service stays at zero on each of them.
"""

import contextlib
import json

import pytest

from billing_events.models import Account, WebhookEvent
from dunning import models as dunning_models
from dunning import test_clock
from simulation import simulate
from simulation.book import DAY, Book, Charge
from simulation.clock_walk import ClockWalk
from simulation.driver import Driver
from simulation.generator import generate
from simulation.hardcases import (
    drawn,
    retries_after_a_card_decline,
    written_off_upgrade_alone,
)
from simulation.ledger import Attempt, InvoiceState
from simulation.mix import MixError, parse_mix
from simulation.report import as_json, format_table
from simulation.service_run import at

# The runs commit (module fixtures, outside any test's transaction); the mark makes
# pytest-django create the test database for this module.
pytestmark = pytest.mark.django_db

HARD_CASES_OFF = [
    "upgrade_uncollectible_rate=0",
    "late_charge_event_rate=0",
    "missing_charge_event_rate=0",
    "old_invoice_rate=0",
]

STRESS = [
    *HARD_CASES_OFF,
    "renewal_failure_rate=0.25",
    "upgrade_rate=0.3",
    "upgrade_failure_rate=0.4",
    "soft_share=0.5",
    "hard_share=0.3",
    "fraud_share=0.1",
    "auth_share=0.1",
    "am_outage_hours=24",
    # Write-offs are exercised by the gaps run below; this seed's claims run keeps them
    # out so that its stream (and the legacy faults it shows) stays as measured.
    "uncollectible_rate=0",
]


def _clean() -> None:
    Account.objects.all().delete()  # cascades to every store the run wrote
    WebhookEvent.objects.all().delete()
    dunning_models.TestClock.objects.all().delete()


def _run(django_db_blocker, **kwargs) -> dict:
    with django_db_blocker.unblock():
        _clean()
        try:
            report = simulate(**kwargs)
        finally:
            _clean()
    report.pop("_seconds")
    return report


@pytest.fixture(scope="module")
def report(django_db_setup, django_db_blocker) -> dict:
    # The seed's sparser legacy cadence: the stress claims were measured on it.
    return _run(
        django_db_blocker,
        accounts=80,
        days=60,
        seed=11,
        mix=parse_mix(STRESS),
        legacy_retry_days=(3, 8, 15, 22),
    )


def test_the_service_keeps_its_claims(report):
    service = report["service"]
    assert service["upgrade_only_bad_debt"] == 0
    assert service["limbo"] == 0, service["limbo_by_level"]
    assert service["disagree_after_convergence"] == 0
    assert service["drift_recomputed_accounts"] == 80
    assert service["retries_on_hard"] == 0
    assert service["retries_on_fraud"] == 0
    assert service["retries_on_auth_required"] == 0
    assert service["lost_or_stuck_total"] == 0, service["lost_or_stuck"]
    assert service["network_cap"]["attempts_over_cap"] == 0


def test_the_legacy_model_shows_the_faults_it_models(report):
    legacy = report["legacy"]
    assert legacy["upgrade_only_bad_debt"] > 0
    assert legacy["upgrade_only_bad_debt_per_year"] > 0
    assert legacy["limbo"] > 0
    assert legacy["retries_on_hard"] > 0
    assert legacy["retries_on_fraud"] > 0
    assert legacy["retries_on_auth_required"] > 0
    # The synchronous call: escalations that fell in the outage were dropped.
    assert legacy["lost_or_stuck"]["escalations_dropped_in_outage"] > 0


def test_the_run_went_through_the_real_path(report):
    service = report["service"]
    deliveries = service["deliveries"]
    # Every signed delivery accepted, duplicates stored once, every event processed.
    assert deliveries["delivered"] > deliveries["events_created"] > 500
    assert deliveries["duplicates_delivered"] > 0
    assert deliveries["delayed_1min_to_3h"] > 0
    assert service["webhook_events_by_status"] == {"processed": deliveries["events_created"]}
    # The gateway answered the service's retries, and some of them collected.
    assert service["retries"] > 0 and service["recovered_by"]["retry"] > 0
    # Account Management was down for a day and refused updates; the engine escalated
    # anyway, and every standing converged once it was back.
    assert service["account_management"]["refused_during_outage"] > 0
    assert service["escalations_during_outage"]["applied"] > 0
    assert service["standing_unacknowledged"] == 0
    assert service["account_management_differs"] == 0
    # The end of the ladder is reached and cancels through the gateway.
    assert service["cancelled_by_the_ladder"] > 0
    # Both sides faced the same customers: the same invoices failed first (the service
    # has no more: cancelled subscriptions are billed no more).
    assert 0 < service["failed_invoices"] <= report["legacy"]["failed_invoices"]


def test_the_report_prints_and_serialises(report):
    table = format_table(report)
    assert "upgrade-only bad debt" in table and "this service" in table
    assert json.loads(as_json(report)) == json.loads(json.dumps(report))


# Every hard case in a 15-account book (seed 7), for the same-seed check.
STRESS_HARD = [
    *STRESS,
    "late_charge_event_rate=0.4",
    "missing_charge_event_rate=0.3",
    "old_invoice_rate=0.3",
    "upgrade_uncollectible_rate=1",
]


def test_the_same_seed_gives_the_same_report(django_db_setup, django_db_blocker):
    mix = parse_mix(STRESS_HARD)
    first = _run(django_db_blocker, accounts=15, days=30, seed=7, mix=mix)
    second = _run(django_db_blocker, accounts=15, days=30, seed=7, mix=mix)
    assert as_json(first) == as_json(second)
    assert first["service"]["deliveries"]["events_created"] > 0
    assert all(_hard_case_counts(first["book"]["hard_cases"]).values())


def test_the_walk_in_memory_runs_what_the_test_clock_runs(
    django_db_setup, django_db_blocker, monkeypatch
):
    """The simulator holds the clock in memory (`ClockWalk`); the same book walked by
    `test_clock.advance` itself, the clock's row read at every `clock.now()`, gives the
    same report to the byte."""
    mix = parse_mix(STRESS_HARD)
    walked = _run(django_db_blocker, accounts=15, days=30, seed=7, mix=mix)

    def advance_as_the_test_clock_does(driver, t: float, due) -> None:
        if t > driver.now or t == 0:
            test_clock.advance(to=at(t))
        driver.walk.now = at(t)  # the walk's probe looks from the clock's time
        driver.now = t

    monkeypatch.setattr(Driver, "advance", advance_as_the_test_clock_does)
    monkeypatch.setattr(ClockWalk, "held", lambda walk: contextlib.nullcontext())
    advanced = _run(django_db_blocker, accounts=15, days=30, seed=7, mix=mix)
    assert advanced["service"]["deliveries"]["events_created"] > 0
    assert as_json(advanced) == as_json(walked)


GAPS = [
    *HARD_CASES_OFF,
    "renewal_failure_rate=0.4",
    "upgrade_rate=0.5",
    "upgrade_failure_rate=0.5",
    "uncollectible_rate=0.5",
    "am_outage_hours=1",
]


@pytest.fixture(scope="module")
def gaps_report(django_db_setup, django_db_blocker) -> dict:
    return _run(django_db_blocker, accounts=20, days=70, seed=3, mix=parse_mix(GAPS))


def test_the_gaps_run_exercises_write_offs_and_failed_upgrades(gaps_report):
    # Preconditions of the two tests below, so that they cannot pass only because the
    # run missed the scenario.
    service = gaps_report["service"]
    assert service["uncollectible_amount"] > 0
    failures = gaps_report["book"]["failures_drawn"]
    assert sum(n for kind, n in failures.items() if kind.startswith("upgrade:")) > 0
    assert service["bad_debt_entries"] > 0
    # The claims that do hold here too.
    assert service["upgrade_only_bad_debt"] == 0
    assert service["lost_or_stuck_total"] == 0
    assert service["disagree_after_convergence"] == 0


def test_a_written_off_account_does_not_stay_in_limbo(gaps_report):
    assert gaps_report["service"]["limbo"] == 0


def test_an_unpaid_upgrade_never_brings_bad_debt_forward(gaps_report):
    assert gaps_report["service"]["bad_debt_dated_by_an_older_upgrade_invoice"] == 0


# --- the hard cases ---------------------------------------------------------------------


def _hard_case_counts(hard_cases: dict) -> dict[str, int]:
    keys = (
        "upgrade_invoices_stripe_marks_uncollectible",
        "late_charge_events",
        "missing_charge_events",
        "invoices_first_seen_old",
    )
    return {key: hard_cases[key] for key in keys}


@pytest.mark.parametrize(
    ("accounts", "days", "seed"),
    [(1000, 90, 7), (200, 60, 7)],  # `make simulate`'s book, and the run below
)
def test_the_default_book_holds_every_hard_case(accounts, days, seed):
    hard_cases = drawn(generate(accounts=accounts, days=days, seed=seed))
    assert all(_hard_case_counts(hard_cases).values()), hard_cases


def test_late_charge_events_reach_every_decline_class_in_the_default_book():
    hard_cases = drawn(generate(accounts=1000, days=90, seed=7))
    assert set(hard_cases["late_charge_events_by_class"]) == {"soft", "hard", "fraud", "auth"}


def test_old_invoices_are_first_seen_20_to_60_days_old_in_the_first_week():
    book = generate(accounts=1000, days=90, seed=7)
    old = [c for truth in book.accounts for c in truth.charges if c.old]
    assert old and all(c.trouble is not None for c in old)
    for charge in old:
        assert 20 * DAY <= charge.first_seen_after <= 60 * DAY
        assert 0 <= charge.seen_at <= 7 * DAY


def _customers(book: Book) -> list:
    return [
        (
            truth.plan,
            truth.tenure_months,
            [(c.invoice_id, c.at, c.trouble) for c in truth.charges if not c.old],
        )
        for truth in book.accounts
    ]


def test_the_hard_cases_do_not_change_who_the_customers_are():
    # They come from a stream of their own: switching them off gives the same customers,
    # charges and troubles, so the comparison with older runs stays like for like.
    with_them = generate(accounts=300, days=60, seed=11)
    without = generate(accounts=300, days=60, seed=11, mix=parse_mix(HARD_CASES_OFF))
    assert _customers(with_them) == _customers(without)
    assert with_them.delivery_seed == without.delivery_seed
    assert not any(drawn(without)[key] for key in _hard_case_counts(drawn(without)))


def test_late_and_missing_shares_cannot_exceed_all_failures():
    with pytest.raises(MixError):
        parse_mix(["late_charge_event_rate=0.7", "missing_charge_event_rate=0.4"])


def _attempt(t: float, *, card: int = 0, retry: bool = True, declined_by: str = "") -> Attempt:
    return Attempt(t, account=1, invoice_id="in_1", card=card, retry=retry, declined_by=declined_by)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        # A soft decline does not stop the card.
        ([_attempt(0, retry=False, declined_by="soft"), _attempt(1)], {"hard": 0, "fraud": 0}),
        # Every retry after a hard decline on that card counts, declined or not.
        (
            [
                _attempt(0, retry=False, declined_by="hard"),
                _attempt(1, declined_by="hard"),
                _attempt(2),
            ],
            {"hard": 2, "fraud": 0},
        ),
        # A new card (the next generation) starts clean.
        (
            [_attempt(0, retry=False, declined_by="fraud"), _attempt(5, card=1)],
            {"hard": 0, "fraud": 0},
        ),
        # Counted by the class of the first stopping decline, in time order.
        (
            [
                _attempt(3),
                _attempt(0, retry=False, declined_by="fraud"),
                _attempt(1, declined_by="hard"),
            ],
            {"hard": 0, "fraud": 2},
        ),
        # The first charge is not a retry.
        (
            [_attempt(0, retry=False, declined_by="hard"), _attempt(1, retry=False)],
            {"hard": 0, "fraud": 0},
        ),
    ],
)
def test_retries_after_a_card_decline(attempts, expected):
    counted = retries_after_a_card_decline(attempts)
    assert counted["retries_after_a_card_decline_by_class"] == expected
    assert counted["retries_after_a_hard_or_fraud_decline_on_the_card"] == sum(expected.values())


def _owed(kind: str, status: str = "open", closed_at: float | None = None) -> InvoiceState:
    charge = Charge(f"in_{kind}", kind, 0.0, 2900, trouble=None)
    return InvoiceState(charge, 0, status=status, failed_at=0.0, closed_at=closed_at)


@pytest.mark.parametrize(
    ("owed", "at", "expected"),
    [
        ([("upgrade", "uncollectible", 10.0)], 10.0, True),
        ([("upgrade", "uncollectible", 10.0)], 9.0, False),  # not yet written off then
        ([("upgrade", "open", None)], 10.0, False),  # an unpaid upgrade, no write-off
        ([("upgrade", "uncollectible", 5.0), ("renewal", "open", None)], 10.0, False),
        ([], 10.0, False),
    ],
)
def test_bad_debt_from_an_upgrade_write_off_alone(owed, at, expected):
    states = [_owed(kind, status, closed) for kind, status, closed in owed]
    assert written_off_upgrade_alone(states, at) is expected


@pytest.fixture(scope="module")
def hard_report(django_db_setup, django_db_blocker) -> dict:
    # The default mix: every hard case is in this book (see the test above).
    return _run(django_db_blocker, accounts=200, days=60, seed=7)


def test_the_default_mix_run_meets_every_hard_case(hard_report):
    legacy, service = hard_report["legacy"], hard_report["service"]
    assert service["upgrade_write_offs_met"] > 0
    assert service["late_charge_events_met"] > 0
    assert service["missing_charge_events_met"] > 0
    assert service["old_invoices_first_seen"] > 0
    # The legacy model meets them too, and shows the faults they bring out.
    assert legacy["upgrade_write_offs_met"] > 0
    assert sum(legacy["old_invoices_by_status_at_end"].values()) > 0
    assert legacy["upgrade_only_bad_debt_after_an_upgrade_write_off"] > 0
    assert legacy["retries_after_a_hard_or_fraud_decline_on_the_card"] > 0
    # Late deliveries carry the payment intent's event as well; every event processed.
    deliveries = service["deliveries"]
    assert service["webhook_events_by_status"] == {"processed": deliveries["events_created"]}
    assert service["lost_or_stuck_total"] == 0, service["lost_or_stuck"]
    table = format_table(hard_report)
    for label in ("hard cases met in the run", "first decision was above notice"):
        assert label in table


def test_an_upgrade_write_off_puts_no_account_in_bad_debt(hard_report):
    service = hard_report["service"]
    assert service["upgrade_only_bad_debt_after_an_upgrade_write_off"] == 0
    assert service["upgrade_only_bad_debt"] == 0


def test_no_retry_on_a_card_after_its_hard_or_fraud_decline(hard_report):
    assert hard_report["service"]["retries_after_a_hard_or_fraud_decline_on_the_card"] == 0


def test_no_charge_while_the_latest_decline_code_is_unknown(hard_report):
    assert hard_report["service"]["charged_while_decline_class_unknown"] == 0


def test_every_case_starts_at_notice_at_most(hard_report):
    service = hard_report["service"]
    assert service["first_decision_above_notice"] == 0, service["first_decision_levels"]


def test_no_ladder_dated_by_an_older_upgrade_invoice_with_the_hard_cases(hard_report):
    assert hard_report["service"]["bad_debt_dated_by_an_older_upgrade_invoice"] == 0


# --- the fair report: one set of definitions, the ablation, several seeds -------------

DEFAULT_SEEDS = range(7, 12)  # `make simulate`: --seed 7 --seeds 5, 1,000 accounts, 90 days


def _ablation(seed: int, accounts: int = 1000, days: int = 90) -> dict:
    from simulation.ablation import ablate

    return ablate(generate(accounts=accounts, days=days, seed=seed))


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
def test_the_default_book_shows_every_fault_of_the_seed_on_every_seed(seed):
    legacy = _ablation(seed)["legacy"]
    assert legacy["upgrade_only_bad_debt"] > 0
    assert legacy["limbo"] > 0
    assert legacy["retries_on_hard"] > 0


@pytest.mark.parametrize(
    ("variant", "metric"),
    [
        ("decline classes off: one cadence for all", "retries_on_hard"),
        ("ladder off: a binary flag at exhaustion", "limbo"),
        ("upgrade rule off", "upgrade_only_bad_debt"),
    ],
)
def test_each_part_switched_off_brings_its_fault_back(variant, metric):
    table = _ablation(7)
    assert table["the whole design (modelled)"][metric] == 0
    assert table[variant][metric] > 0
    assert table["legacy"][metric] > 0


def test_the_legacy_baseline_retries_on_the_service_soft_cadence():
    from dunning.policy import DEFAULT_RETRIES, DeclineClass
    from simulation.legacy import LEGACY, legacy_design

    soft = tuple(d.days for d in DEFAULT_RETRIES.schedules[DeclineClass.SOFT])
    assert LEGACY.retry_days == soft
    assert legacy_design((3, 8, 15, 22)).retry_days == (3, 8, 15, 22)


def _ledger_with(owed: dict[int, list[str]]):
    """A ledger where each account owes failed invoices of the given kinds."""
    from simulation.ledger import Ledger

    ledger = Ledger()
    for account, kinds in owed.items():
        for number, kind in enumerate(kinds):
            charge = Charge(f"in_{account}_{number}", kind, 0.0, 900, None)
            state = InvoiceState(charge, account, failed_at=0.0)
            ledger.invoices[charge.invoice_id] = state
            ledger.by_account[account].append(charge.invoice_id)
    return ledger


@pytest.mark.parametrize(
    ("owed", "cancelled", "planned", "expected"),
    [
        ({1: ["renewal"]}, set(), set(), {"limbo": 1, "limbo_upgrade_only": 0}),
        ({1: ["upgrade"]}, set(), set(), {"limbo": 1, "limbo_upgrade_only": 1}),
        ({1: ["upgrade", "renewal"]}, set(), set(), {"limbo": 1, "limbo_upgrade_only": 0}),
        ({1: ["renewal"]}, {1}, set(), {"limbo": 0, "limbo_upgrade_only": 0}),
        ({1: ["upgrade"]}, set(), {1}, {"limbo": 0, "limbo_upgrade_only": 0}),
        ({1: [], 2: ["upgrade"]}, set(), set(), {"limbo": 1, "limbo_upgrade_only": 1}),
    ],
)
def test_limbo_is_owing_uncancelled_and_nothing_planned(owed, cancelled, planned, expected):
    from simulation.fair import limbo

    assert limbo(_ledger_with(owed), cancelled=cancelled, planned=planned) == expected


@pytest.mark.parametrize(
    ("owed", "expected_upgrade_only"),
    [({1: ["upgrade"]}, 1), ({1: ["upgrade", "renewal"]}, 0), ({1: ["renewal"]}, 0)],
)
def test_bad_debt_is_upgrade_only_when_every_failed_invoice_owed_is_an_upgrade(
    owed, expected_upgrade_only
):
    from simulation.fair import bad_debt

    counted = bad_debt([(1, DAY)], _ledger_with(owed), days=90)
    assert counted["bad_debt_entries"] == 1
    assert counted["upgrade_only_bad_debt"] == expected_upgrade_only


def test_both_sides_count_limbo_and_bad_debt_with_the_same_code():
    """The legacy model and the service's measures both count through `fair`."""
    from simulation import fair, measure, model

    assert model.limbo is fair.limbo and model.bad_debt is fair.bad_debt
    assert measure.fair is fair


@pytest.fixture(scope="module")
def seeded_report(django_db_setup, django_db_blocker) -> dict:
    return _run(django_db_blocker, accounts=120, days=45, seed=3, seeds=3)


def test_the_report_shows_the_ablation_spread_claims_and_definitions(seeded_report):
    ablation = seeded_report["ablation"]
    assert ablation["seeds"] == [3, 4, 5] and ablation["service_seeds"] == [3]
    table = ablation["table"]
    assert next(iter(table)) == "legacy" and "this service (real engine)" in table
    assert len(table["legacy"]["recovery_rate"]["per_seed"]) == 3
    assert len(table["this service (real engine)"]["recovery_rate"]["per_seed"]) == 1
    service = seeded_report["service"]
    assert table["this service (real engine)"]["limbo"]["mean"] == service["limbo"]
    text = format_table(seeded_report)
    assert "ablation: the same books, seeds 3-5" in text
    assert "upgrade rule off" in text and "definitions" in text
    assert "on every seed" in text
    for side in ("legacy", "service"):
        assert {"limbo", "limbo_upgrade_only", "upgrade_only_bad_debt"} <= set(seeded_report[side])
    json.loads(as_json(seeded_report))
    from simulation.html import render

    page = render(seeded_report)
    assert "What each part of the design buys" in page and "upgrade rule off" in page


# --- a tool over the service ------------------------------------------------------------

PRODUCT_APPS = ("billing_events", "dunning", "entitlements")


@pytest.mark.parametrize("app", PRODUCT_APPS)
def test_no_product_app_imports_the_simulator(app):
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    importing = re.compile(r"^\s*(from|import)\s+simulation\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(root))
        for path in (root / app).rglob("*.py")
        if importing.search(path.read_text())
    ]
    assert offenders == []


def test_the_run_leaves_the_connection_flushing_commits_again(report):
    # The run turns per-commit flushing off for its scratch database (see
    # simulation.service); whatever the connection does next is durable again.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
