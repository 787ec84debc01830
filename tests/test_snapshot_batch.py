"""The drift scan's batch reader reads exactly what the engine's own reader reads."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings

from billing_events.models import Account
from core import clock
from dunning import test_clock as clock_service
from dunning.engine import read_snapshot
from dunning.policy import current_policy
from dunning.snapshot_batch import read_snapshots
from tests.dunning_helpers import account_of
from tests.events import Customer
from tests.snapshot_stories import (
    cancelled,
    card_expiring,
    fails,
    fails_without_a_code,
    new_card,
    paused,
    pays,
    play_story,
    second_invoice_fails,
    signs_up,
    story_steps,
    upgrade_fails,
    written_off,
)

pytestmark = pytest.mark.django_db
UNKNOWN = 987_654_321  # no such account


def engine_reads(account_ids, now) -> dict:
    """What `lock_and_read` gives for each account, one at a time (the reference)."""
    policy, found = current_policy(), {}
    for account_id in account_ids:
        with transaction.atomic():
            try:
                _, found[account_id] = read_snapshot(
                    account_id=account_id, now=now, policy=policy, lock=False
                )
            except Account.DoesNotExist:
                continue
    return found


def same_as_the_engine(account_ids) -> dict:
    now = clock.now()
    batch = read_snapshots([*account_ids, UNKNOWN], now=now, policy=current_policy())
    expected = engine_reads(account_ids, now)
    assert batch.keys() == expected.keys()
    for account_id, snapshot in expected.items():
        assert batch[account_id] == snapshot, account_id
    return batch


def test_every_kind_of_account_reads_the_same_in_a_batch(stripe_sender, test_clock):
    stories = {
        "soft": [signs_up, fails],
        "hard": [signs_up, lambda s, c: fails(s, c, "expired_card")],
        "paid": [signs_up, fails, pays],
        "half_paid": [fails, second_invoice_fails, pays],  # a paid invoice in an open case
        "upgrade": [upgrade_fails],
        "writtenoff": [lambda s, c: fails(s, c, "do_not_honor"), written_off],
        "paused": [signs_up, fails, lambda s, c: paused(s, c, days=60)],
        "expiring": [signs_up, card_expiring],
        "lookup": [fails_without_a_code],
        "cancelled": [fails, cancelled],
        "quiet": [signs_up],
    }
    customers = {}
    for name, steps in stories.items():
        cus = customers[name] = Customer(id=f"cus_B{name}", subscription=f"sub_B{name}")
        for step in steps:
            step(stripe_sender, cus)
    ids = [account_of(cus).pk for cus in customers.values()]

    seen = [same_as_the_engine(ids)]  # the moment after: look-ups and side effects pending
    # Retries, ladder steps, notices, bad debt, the end; and a case open for over 60 days.
    for days in (1, 1.5, 3, 8, 16, 40, 75):
        clock_service.advance(to=test_clock + timedelta(days=days))
        if days == 1:
            pays(stripe_sender, customers["lookup"])  # its answered look-up still counts
        if days == 8:
            new_card(stripe_sender, customers["hard"])
            fails(stripe_sender, customers["paid"])  # a second case, within the memory
        seen.append(same_as_the_engine(ids))

    snapshots = [s for batch in seen for s in batch.values()]
    # The comparisons covered every part of a snapshot, not just empty ones.
    assert any(s.scheduled_retry for s in snapshots)
    assert any(s.case and s.case.paused_until for s in snapshots)
    assert any(s.bad_debt for s in snapshots)
    assert any(s.restrictions for s in snapshots)
    assert any(s.notices for s in snapshots)
    assert any(s.card_expiring_at for s in snapshots)
    assert any(s.lookups_asked for s in snapshots)
    assert any(s.attempts and s.card_history for s in snapshots)
    assert any(s.recent_cases for s in snapshots)
    assert any(s.paid_invoices for s in snapshots)
    assert any(s.standing_requested != "good" for s in snapshots)
    assert any("canceled" in s.subscription_status.values() for s in snapshots)
    assert any(i.billing_reason == "subscription_update" for s in snapshots for i in s.invoices)
    assert any(
        i.status == "paid" and s.case and i.case_id == s.case.pk
        for s in snapshots
        for i in s.invoices
    )


def test_a_batch_costs_the_same_ten_statements_whatever_its_size(stripe_sender, test_clock):
    customers = [Customer(id=f"cus_N{n}", subscription=f"sub_N{n}") for n in range(12)]
    for cus in customers:
        fails(stripe_sender, cus)
    ids = [account_of(cus).pk for cus in customers]
    now, policy = clock.now(), current_policy()

    def statements(account_ids) -> int:
        with CaptureQueriesContext(connection) as captured:
            read_snapshots(account_ids, now=now, policy=policy)
        return sum(q["sql"].lstrip().upper().startswith("SELECT") for q in captured)

    assert statements(ids[:1]) == statements(ids) == 10


@pytest.mark.django_db(transaction=True)
def test_a_batch_read_outside_any_transaction_is_one_consistent_view(stripe_sender, test_clock):
    cus = Customer(id="cus_Bview")
    fails(stripe_sender, cus)
    account_id = account_of(cus).pk
    assert not connection.in_atomic_block

    batch = read_snapshots([account_id], now=clock.now(), policy=current_policy())

    assert batch == engine_reads([account_id], clock.now())
    assert batch[account_id].case is not None


def test_the_embedded_database_reads_one_account_at_a_time_alike(
    stripe_sender, test_clock, monkeypatch
):
    customers = [Customer(id=f"cus_E{n}", subscription=f"sub_E{n}") for n in range(3)]
    for cus in customers:
        fails(stripe_sender, cus)
    ids = [account_of(cus).pk for cus in customers]
    now, policy = clock.now(), current_policy()
    batched = read_snapshots(ids, now=now, policy=policy)

    monkeypatch.setattr(connection, "vendor", "sqlite")  # SQLite's path, on this database
    assert read_snapshots([*ids, UNKNOWN], now=now, policy=policy) == batched


story_number = iter(range(10**6))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=story_steps(days=[1, 2, 5, 9, 20]))
def test_generated_stories_read_the_same_in_a_batch(stripe_sender, test_clock, steps):
    with transaction.atomic():  # each example starts from the same empty book
        same_as_the_engine(play_story(stripe_sender, f"H{next(story_number)}", steps))
        transaction.set_rollback(True)
