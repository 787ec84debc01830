"""Drift detection with a time guard, and the stuck-in-lifting re-drive."""

import threading
from datetime import timedelta

import pytest

from billing_events.gateway import succeeded
from billing_events.models import Account
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import drift, outbox
from dunning import test_clock as clock_service
from dunning.drift import candidates, scan
from dunning.models import AccountStanding, CaseState, DriftScan, OutboxItem
from dunning.stuck import redrive_stuck_lifting, stuck_cases
from entitlements.models import Restriction
from tests.dunning_helpers import account_of, case_of, deliver_now

pytestmark = pytest.mark.django_db
DAY = 86400


def failing(sender, cus, code="insufficient_funds"):
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}", decline_code=code),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )


def test_restrictions_removed_behind_the_engines_back_are_put_back(stripe_sender, test_clock):
    cus = StripeCustomer()
    failing(stripe_sender, cus, "expired_card")  # no retries: no payment activity later
    clock_service.advance(seconds=8 * DAY)
    Restriction.objects.all().delete()  # someone "fixed" it by hand

    run = scan()

    assert (run.candidates, run.drifted, run.remediated, run.deferred) == (1, 1, 1, 0)
    assert set(Restriction.objects.values_list("code", flat=True)) == {"premium_features"}
    assert case_of(cus).last_decision.trigger == "DRIFT_DETECTED"


def test_a_scan_in_batches_remediates_and_defers_exactly_as_account_by_account(
    stripe_sender, test_clock, settings, monkeypatch
):
    settings.DRIFT_GUARD_SECONDS = 900
    monkeypatch.setattr(drift, "BATCH", 2)  # five accounts: three batches
    customers = [StripeCustomer(id=f"cus_b{n}", subscription=f"sub_b{n}") for n in range(5)]
    for cus in customers:
        failing(stripe_sender, cus, "expired_card")
    clock_service.advance(seconds=8 * DAY)
    failing(stripe_sender, customers[3], "expired_card")  # fresh activity: guarded
    fixed_by_hand = [account_of(customers[n]) for n in (1, 3)]
    Restriction.objects.filter(account__in=fixed_by_hand).delete()

    run = scan()

    assert (run.candidates, run.drifted, run.deferred, run.remediated) == (5, 2, 1, 1)
    assert Restriction.objects.filter(account=fixed_by_hand[0]).exists()  # put back
    assert not Restriction.objects.filter(account=fixed_by_hand[1]).exists()  # left for later
    assert case_of(customers[1]).last_decision.trigger == "DRIFT_DETECTED"


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_next_batch_is_read_on_a_second_connection(
    stripe_sender, test_clock, monkeypatch
):
    monkeypatch.setattr(drift, "BATCH", 2)  # five accounts: three batches, two read ahead
    customers = [StripeCustomer(id=f"cus_t{n}", subscription=f"sub_t{n}") for n in range(5)]
    for cus in customers:
        failing(stripe_sender, cus, "expired_card")
    clock_service.advance(seconds=8 * DAY)
    Restriction.objects.filter(account=account_of(customers[4])).delete()  # the last batch
    readers = []
    real = drift.read_snapshots

    def read_snapshots(batch, **kwargs):
        readers.append(threading.current_thread().name)
        return real(batch, **kwargs)

    monkeypatch.setattr(drift, "read_snapshots", read_snapshots)

    run = scan()

    assert (run.candidates, run.drifted, run.deferred, run.remediated) == (5, 1, 0, 1)
    assert Restriction.objects.filter(account=account_of(customers[4])).exists()
    assert len(readers) == 3 and all(name.startswith("drift-read") for name in readers)


def test_a_consistent_book_is_scanned_without_any_change(stripe_sender, test_clock):
    for n in range(5):
        failing(stripe_sender, StripeCustomer(id=f"cus_ok{n}", subscription=f"sub_ok{n}"))
    clock_service.advance(seconds=DAY / 2)

    run = scan()

    assert (run.candidates, run.drifted) == (5, 0)


def test_candidates_are_accounts_in_dunning_or_changed_not_all_accounts(stripe_sender, test_clock):
    Account.objects.bulk_create(Account(stripe_customer_id=f"cus_quiet{n}") for n in range(300))
    cus = StripeCustomer()
    failing(stripe_sender, cus)

    assert candidates(since=clock.now() + timedelta(seconds=1)) == {account_of(cus).pk}


def test_the_time_guard_leaves_a_payment_in_flight_alone(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    failing(stripe_sender, cus)
    clock_service.advance(seconds=DAY - 60)
    clock_service._set(clock.now() + timedelta(seconds=60))  # the day-1 retry is due...
    [item] = outbox.claim_due()  # ...and a worker has it: the charge is in flight
    Restriction.objects.create(
        account=account_of(cus),
        code="core_access",
        level="suspended",
        reason="stale",
        since=clock.now(),
    )

    during = scan()  # drift runs while the retry is in flight

    assert (during.drifted, during.deferred, during.remediated) == (1, 1, 0)
    assert Restriction.objects.filter(code="core_access").exists()  # left alone for now

    simulated_gateway.script(cus.invoice_id, [succeeded()])
    outbox.run_item(item_id=item)  # the retry succeeds
    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", "paid")
    assert not Restriction.objects.exists()  # the engine lifted everything on the result

    clock_service.advance(seconds=3600)  # past the guard window
    after = scan()
    assert after.drifted == 0
    assert case_of(cus).resolution == "paid"


def test_recent_payment_activity_defers_remediation_until_the_window_passes(
    stripe_sender, test_clock, settings
):
    settings.DRIFT_GUARD_SECONDS = 900
    cus = StripeCustomer()
    failing(stripe_sender, cus, "expired_card")
    clock_service.advance(seconds=8 * DAY)
    failing(stripe_sender, cus, "expired_card")  # fresh activity
    Restriction.objects.all().delete()

    assert scan().deferred == 1
    clock_service.advance(seconds=901)
    assert scan().remediated == 1
    assert DriftScan.objects.count() == 2


def test_stuck_in_lifting_is_counted_and_redriven(stripe_sender, test_clock, settings):
    settings.ACCOUNT_MANAGEMENT_URL = "http://127.0.0.1:9"  # refuses: the standing never lands
    settings.OUTBOX_MAX_ATTEMPTS = 1
    cus = StripeCustomer()
    failing(stripe_sender, cus, "expired_card")
    clock_service.advance(seconds=8 * DAY)
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event("invoice.paid", status="paid", attempt_count=1),
    )
    assert case_of(cus).state == CaseState.LIFTING
    clock_service.advance(seconds=2 * 3600)
    assert list(stuck_cases(now=clock.now()).values_list("account_id", flat=True)) == [
        account_of(cus).pk
    ]

    settings.ACCOUNT_MANAGEMENT_URL = ""  # Account Management is back (off: acknowledged at once)
    assert redrive_stuck_lifting() == 1
    outbox.drain()

    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", "paid")
    assert AccountStanding.objects.get().acknowledged == "good"
    assert not stuck_cases(now=clock.now()).exists()
    assert not OutboxItem.objects.filter(status="pending").exists()


def test_accounts_changed_since_the_last_scan_are_examined(stripe_sender, test_clock):
    first = scan()
    assert first.candidates == 0
    clock_service.advance(seconds=60)
    cus = StripeCustomer()
    deliver_now(stripe_sender, cus, lambda c: c.customer_updated("pm_1"))  # not in dunning
    clock_service.advance(seconds=60)

    assert scan().candidates == 1
    clock_service.advance(seconds=60)
    assert scan().candidates == 0  # nothing changed since
