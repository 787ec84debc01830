"""On PostgreSQL the snapshot is read in one statement (`snapshot_pg`); the embedded default
keeps the ten (`snapshot_sql.read_rows_in_ten`). Both, on PostgreSQL, give the same
Snapshot for every kind of account, trigger invoice and window."""

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings

from billing_events.models import Account, Invoice
from core import clock
from dunning import snapshot_pg
from dunning import test_clock as clock_service
from dunning.models import OPEN_STATES, DunningCase
from dunning.snapshot_pg import lock_and_read
from dunning.snapshot_rows import assemble
from dunning.snapshot_sql import read_rows_in_ten
from tests.dunning_helpers import account_of
from tests.events import Customer
from tests.snapshot_stories import (
    STEPS,
    cancelled,
    fails,
    paused,
    pays,
    play_story,
    signs_up,
    story_steps,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the one statement is PostgreSQL's"
    ),
]
WINDOWS = [
    # card window, severity memory, look-up window, paid invoices counted to
    (timedelta(days=30), timedelta(days=180), timedelta(days=2), 12),
    (timedelta(days=1), timedelta(days=2), timedelta(hours=1), 1),
    (timedelta(days=400), timedelta(days=400), timedelta(days=90), 0),
]


def both_reads(account_id: int, *, hint: str = "", lock: bool = True, windows=WINDOWS[0]):
    """The snapshot as each reader gives it, in one transaction each; None without one."""
    card_window, memory, lookup_window, paid_enough = windows
    read = {
        "account_id": account_id,
        "now": clock.now(),
        "card_window": card_window,
        "memory": memory,
        "lookup_window": lookup_window,
        "invoice_hint": hint,
        "lock": lock,
        "paid_enough": paid_enough,
    }
    snapshots = []
    for reader in (snapshot_pg.read_rows, read_rows_in_ten):
        with transaction.atomic():
            rows = reader(**read)
        snapshots.append(rows and assemble(account_id, rows, now=read["now"], memory=memory))
    return snapshots


def assert_same_for_every_trigger(account_ids) -> list:
    """Both readers agree for each account: for every invoice the trigger could name (a
    resolved case's one reads that case), and without one for each window, with and
    without the lock."""
    seen = []
    for account_id in account_ids:
        named = Invoice.objects.filter(account_id=account_id).values_list(
            "stripe_invoice_id", flat=True
        )
        reads = [{"hint": hint} for hint in ("in_nobody", *named)]
        reads += [{"windows": w, "lock": lock} for w in WINDOWS for lock in (True, False)]
        for read in reads:
            one, ten = both_reads(account_id, **read)
            assert one == ten, (account_id, read)
            seen.append(one)
    return seen


def test_every_kind_of_account_reads_the_same_in_one_statement(stripe_sender, test_clock):
    stories = {
        "soft": [signs_up, fails],
        "hard": [signs_up, lambda s, c: fails(s, c, "expired_card")],
        "paid": [signs_up, fails, pays],
        "upgrade": [STEPS["upgrade"]],
        "writtenoff": [lambda s, c: fails(s, c, "do_not_honor"), STEPS["written_off"]],
        "paused": [signs_up, fails, lambda s, c: paused(s, c, days=60)],
        "expiring": [signs_up, STEPS["card_expiring"]],
        "lookup": [STEPS["no_code"]],
        "cancelled": [fails, cancelled],
        "quiet": [signs_up],
    }
    customers = {}
    for name, steps in stories.items():
        cus = customers[name] = Customer(id=f"cus_O{name}", subscription=f"sub_O{name}")
        for step in steps:
            step(stripe_sender, cus)
    ids = [account_of(cus).pk for cus in customers.values()]

    snapshots = assert_same_for_every_trigger(ids)
    for days in (1, 3, 8, 16, 40, 75):
        clock_service.advance(to=test_clock + timedelta(days=days))
        if days == 8:
            fails(stripe_sender, customers["paid"])  # a second case, the first resolved
        snapshots += assert_same_for_every_trigger(ids)

    # The comparisons covered every part of a snapshot, not just empty ones.
    assert any(s.scheduled_retry for s in snapshots)
    assert any(s.case and s.case.paused_until for s in snapshots)
    assert any(s.case and s.case.state == "resolved" for s in snapshots)
    assert any(s.bad_debt for s in snapshots)
    assert any(s.restrictions for s in snapshots)
    assert any(s.notices for s in snapshots)
    assert any(s.card_expiring_at for s in snapshots)
    assert any(s.lookups_asked for s in snapshots)
    assert any(s.lookups_ended for s in snapshots)
    assert any(s.attempts and s.card_history for s in snapshots)
    assert any(s.recent_cases for s in snapshots)
    assert any(s.paid_invoices for s in snapshots)
    assert any(s.standing_requested != "good" for s in snapshots)
    assert any("canceled" in s.subscription_status.values() for s in snapshots)


def test_behind_a_transaction_pooler_the_statement_is_sent_whole(
    stripe_sender, test_clock, monkeypatch
):
    cus = Customer(id="cus_Opooled")
    fails(stripe_sender, cus)
    account_id = account_of(cus).pk
    prepared = both_reads(account_id)[0]
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    with CaptureQueriesContext(connection) as captured:
        whole, ten = both_reads(account_id)
    assert whole == prepared == ten
    assert not any("EXECUTE" in q["sql"] or "PREPARE" in q["sql"] for q in captured)


def test_an_unknown_account_is_none_to_both_and_refused():
    assert both_reads(987_654_321) == [None, None]
    with transaction.atomic(), pytest.raises(Account.DoesNotExist):
        lock_and_read(
            account_id=987_654_321,
            now=clock.now(),
            card_window=timedelta(days=30),
            memory=timedelta(days=90),
        )


def test_the_read_is_one_statement_after_the_lock_in_one_message(stripe_sender, test_clock):
    cus = Customer(id="cus_Ocount")
    fails(stripe_sender, cus)
    account_id = account_of(cus).pk
    read = {"now": clock.now(), "card_window": timedelta(days=30), "memory": timedelta(days=90)}
    with transaction.atomic():
        lock_and_read(account_id=account_id, **read)  # prepares it on this connection
    with CaptureQueriesContext(connection) as captured, transaction.atomic():
        lock_and_read(account_id=account_id, **read)
    sql = [q["sql"] for q in captured.captured_queries]
    [sent] = [s for s in sql if not s.startswith(("SAVEPOINT", "RELEASE"))]
    lock, read = sent.split(";\n")
    assert lock.startswith("SELECT") and lock.endswith("FOR UPDATE OF a")
    assert read.startswith(f"EXECUTE {snapshot_pg.READ_PREPARED.name} (")


@pytest.mark.django_db(transaction=True)
def test_a_read_that_waited_for_the_lock_sees_what_the_holder_committed(stripe_sender, test_clock):
    """The read is a statement of its own after the lock: had it waited for the lock inside
    itself, it would read the data as of before the holder's commit."""
    cus = Customer(id="cus_Owait")
    fails(stripe_sender, cus)
    account_id = account_of(cus).pk
    read = {"now": clock.now(), "card_window": timedelta(days=30), "memory": timedelta(days=90)}
    seen, locked, done = [], threading.Event(), threading.Event()

    def reader() -> None:
        try:
            locked.wait(5)
            with transaction.atomic():
                seen.append(lock_and_read(account_id=account_id, **read)[1])
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=reader)
    with transaction.atomic():
        Account.objects.select_for_update().get(pk=account_id)
        thread.start()
        locked.set()
        assert not done.wait(0.3)  # the reader waits for the lock
        DunningCase.objects.filter(account_id=account_id, state__in=OPEN_STATES).update(
            pause_reason="set by the holder"
        )
    thread.join(10)
    [snapshot] = seen
    assert snapshot.case.pause_reason == "set by the holder"


@pytest.mark.django_db(transaction=True)
def test_a_first_read_that_failed_after_preparing_leaves_the_connection_usable(
    stripe_sender, test_clock
):
    """The PREPARE outlives a failed message (it is not transactional): the next read on that
    connection must neither prepare it again nor take it as missing."""
    cus = Customer(id="cus_Otimeout")
    fails(stripe_sender, cus)
    account_id = account_of(cus).pk
    read = {"now": clock.now(), "card_window": timedelta(days=30), "memory": timedelta(days=90)}
    outcome, held, release = [], threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with transaction.atomic():
                Account.objects.select_for_update().get(pk=account_id)
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    connection.close()  # a new session: its first read carries the PREPARE
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '100ms'")
            lock_and_read(account_id=account_id, **read)
    except OperationalError:
        outcome.append("timed out")
    release.set()
    thread.join(10)
    for _ in range(2):
        with transaction.atomic():
            outcome.append(lock_and_read(account_id=account_id, **read)[1].account_id)
    assert outcome == ["timed out", account_id, account_id]


story_number = iter(range(10**6))


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=story_steps(days=[1, 2, 5, 9, 20, 70]))
def test_generated_stories_read_the_same_in_one_statement(stripe_sender, test_clock, steps):
    with transaction.atomic():  # each example starts from the same empty book
        assert_same_for_every_trigger(play_story(stripe_sender, f"G{next(story_number)}", steps))
        transaction.set_rollback(True)
