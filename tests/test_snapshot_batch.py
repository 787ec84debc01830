"""The drift scan's batch reader reads exactly what the engine's own reader reads."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_events.models import Account
from core import clock
from dunning import support
from dunning import test_clock as clock_service
from dunning.engine import read_snapshot
from dunning.models import OPEN_STATES, DunningCase
from dunning.policy import current_policy
from dunning.snapshot_batch import read_snapshots
from tests.dunning_helpers import account_of, on_stripe_clock
from tests.events import Customer, deliver

pytestmark = pytest.mark.django_db
DAY = 86400
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


# Stories, each a few Stripe events (or a support action) at the project clock's time.


def send(sender, cus: Customer, *builders) -> None:
    events = []
    for build in builders:
        on_stripe_clock(cus)
        events.append(build(cus))
    deliver(sender, *events)


def fails(sender, cus: Customer, code: str = "insufficient_funds", **invoice) -> None:
    send(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}_{c.t}", decline_code=code),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1, **invoice),
    )


def second_invoice_fails(sender, cus: Customer) -> None:
    second = f"{cus.invoice_id}_2"
    send(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}_2", invoice_id=second),
        lambda c: c.invoice_event("invoice.payment_failed", invoice_id=second, attempt_count=1),
    )


def pays(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.invoice_event("invoice.paid", status="paid", attempt_count=2))


def fails_without_a_code(sender, cus: Customer) -> None:
    # No charge event: the engine has to ask Stripe for the decline code.
    send(sender, cus, lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1))


def upgrade_fails(sender, cus: Customer) -> None:
    send(
        sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.paid", invoice_id=f"in_{c.id}_base", status="paid", attempt_count=1
        ),
        lambda c: c.charge_event(
            "charge.failed",
            f"ch_{c.id}_up",
            invoice_id=f"in_{c.id}_up",
            decline_code="do_not_honor",
        ),
        lambda c: c.invoice_event(
            "invoice.payment_failed",
            invoice_id=f"in_{c.id}_up",
            billing_reason="subscription_update",
            attempt_count=1,
        ),
    )


def written_off(sender, cus: Customer) -> None:
    send(
        sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.marked_uncollectible", status="uncollectible", attempt_count=2
        ),
    )


def cancelled(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.subscription_event("customer.subscription.deleted", "canceled"))


def paused(sender, cus: Customer, days: int = 10) -> None:
    support.pause_dunning(
        account_id=account_of(cus).pk,
        until=clock.now() + timedelta(days=days),
        reason="promised to pay",
        actor="agent",
    )


def card_expiring(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.source_expiring(exp_month=12, exp_year=2026))


def new_card(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.customer_updated(default_payment_method=f"pm_{c.t}"))


def signs_up(sender, cus: Customer) -> None:
    send(sender, cus, lambda c: c.customer_created(email=f"{c.id}@example.com"))


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


# Generated stories: any few steps, in any order, on two customers, the clock walking.
STEPS = {
    "soft": fails,
    "hard": lambda s, c: fails(s, c, "expired_card"),
    "generic": lambda s, c: fails(s, c, "generic_decline", amount_due=300),
    "no_code": fails_without_a_code,
    "pays": pays,
    "upgrade": upgrade_fails,
    "written_off": written_off,
    "cancelled": cancelled,
    "card_expiring": card_expiring,
    "new_card": new_card,
    "signs_up": signs_up,
}
step = st.one_of(
    st.tuples(st.sampled_from(sorted(STEPS)), st.integers(0, 1)),
    st.tuples(st.just("pause"), st.integers(0, 1)),
    st.tuples(st.just("days"), st.sampled_from([1, 2, 5, 9, 20])),
)
story_number = iter(range(10**6))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=6))
def test_generated_stories_read_the_same_in_a_batch(stripe_sender, test_clock, steps):
    n = next(story_number)
    customers = [Customer(id=f"cus_H{n}x{k}", subscription=f"sub_H{n}x{k}") for k in (0, 1)]
    with transaction.atomic():  # each example starts from the same empty book
        for cus in customers:
            signs_up(stripe_sender, cus)
        for name, arg in steps:
            if name == "days":
                clock_service.advance(seconds=arg * DAY)
            elif name == "pause":
                cus = customers[arg]
                if DunningCase.objects.filter(
                    account__stripe_customer_id=cus.id, state__in=OPEN_STATES
                ).exists():
                    paused(stripe_sender, cus)
            else:
                STEPS[name](stripe_sender, customers[arg])
        same_as_the_engine([account_of(cus).pk for cus in customers])
        transaction.set_rollback(True)
