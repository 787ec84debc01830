"""A recompute costs a constant number of queries, and one account is applied by one
worker at a time."""

import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing_events.models import Account
from billing_events.scenarios import StripeCustomer
from dunning.engine import handle
from dunning.models import CaseTransition, DunningCase
from dunning.triggers import Trigger, TriggerKind
from tests.dunning_helpers import deliver_now

DAY = 86400


def account_with_history(sender, paid_invoices: int) -> int:
    """`paid_invoices` months paid on the first attempt, then one renewal in dunning."""
    cus = StripeCustomer(t=1_700_000_000)
    builders = []
    for month in range(paid_invoices):
        invoice_id = f"in_hist_{month:04d}"
        builders.append(
            lambda c, i=invoice_id: c.invoice_event(
                "invoice.paid", invoice_id=i, status="paid", attempt_count=1
            )
        )
    builders.append(
        lambda c: c.charge_event("charge.failed", "ch_due", decline_code="insufficient_funds")
    )
    builders.append(lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1))
    deliver_now(sender, cus, *builders)
    return Account.objects.get(stripe_customer_id=cus.id).pk


@pytest.mark.django_db
@pytest.mark.parametrize("paid_invoices", [0, 199])
def test_recompute_costs_the_same_queries_for_1_and_200_invoices(
    stripe_sender, test_clock, django_assert_max_num_queries, paid_invoices
):
    account_id = account_with_history(stripe_sender, paid_invoices)
    assert DunningCase.objects.get().state == "retrying"

    # lock, test clock, case, invoices, attempts, standing, pending outbox, card attempts,
    # paid history, earlier cases, bad-debt episode, subscriptions, restrictions, and the
    # savepoint pair around them
    with django_assert_max_num_queries(15):
        outcome = handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id, "support:test"))
    assert outcome.changes == ()


@pytest.mark.django_db
def test_query_count_does_not_grow_with_history(stripe_sender, test_clock):
    counts = {}
    for paid in (0, 199):
        account_id = account_with_history(stripe_sender, paid)
        with CaptureQueriesContext(connection) as queries:
            handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id, "support:test"))
        counts[paid] = len(queries)
        Account.objects.filter(pk=account_id).delete()

    assert counts[0] == counts[199]


@pytest.mark.django_db(transaction=True)
def test_two_workers_recomputing_one_account_apply_once(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_now(stripe_sender, cus, lambda c: c.customer_updated("pm_1"))
    account = Account.objects.get()
    # A failure stored without its recompute, as if two workers picked up its triggers.
    from billing_events.mirror import merge_fact
    from billing_events.normalize import parse_event

    for event in (
        cus.charge_event("charge.failed", "ch_race", decline_code="insufficient_funds"),
        cus.invoice_event("invoice.payment_failed", attempt_count=1),
    ):
        merge_fact(account, parse_event(event))

    barrier = threading.Barrier(2)
    outcomes, errors = [], []

    def worker(name: str) -> None:
        try:
            barrier.wait(timeout=5)
            outcomes.append(handle(Trigger(TriggerKind.PAYMENT_FAILED, account.pk, name)))
        except Exception as error:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(f"worker-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(bool(o.changes) for o in outcomes) == [False, True]
    assert DunningCase.objects.count() == 1
    assert CaseTransition.objects.count() == 1
