"""The snapshot counts paid invoices only up to the good-payer threshold, so a recompute
costs the same for a long history as for a short one, and the decision is the one an
exact count gives, on both sides of the threshold."""

from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing_events.models import Account, Invoice
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import policy_versions, snapshot_pg
from dunning.compute import compute
from dunning.engine import read_snapshot, read_with_policy
from dunning.policy import current_policy
from dunning.policy_document import policy_to_document
from tests.dunning_helpers import deliver_now

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_policy_cache():
    # Version numbers come back after each test's rollback; a process never sees that.
    policy_versions.forget_cache()
    yield
    policy_versions.forget_cache()


def renewal_in_dunning(sender) -> int:
    cus = StripeCustomer()
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_due", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    return Account.objects.get(stripe_customer_id=cus.id).pk


def add_paid_invoices(account_id: int, count: int) -> None:
    at = clock.now() - timedelta(days=400)
    Invoice.objects.bulk_create(
        Invoice(
            stripe_invoice_id=f"in_paid_{account_id}_{n:04d}",
            account_id=account_id,
            status=Invoice.Status.PAID,
            amount_due=2000,
            amount_paid=2000,
            currency="usd",
            stripe_created=at,
            paid_at=at,
            version=at,
            version_event_id=f"evt_paid_{n}",
        )
        for n in range(count)
    )


def snapshot_of(account_id: int):
    with transaction.atomic():
        return read_snapshot(account_id=account_id, now=clock.now(), policy=current_policy())[1]


@pytest.mark.parametrize(
    ("paid", "counted", "good_payer"),
    [
        (0, 0, False),
        (5, 5, False),  # one short of the threshold
        (6, 6, True),  # exactly at it
        (7, 6, True),
        (199, 6, True),
    ],
)
def test_paid_invoices_are_counted_up_to_the_threshold_and_decide_as_an_exact_count(
    stripe_sender, test_clock, paid, counted, good_payer
):
    account_id = renewal_in_dunning(stripe_sender)
    add_paid_invoices(account_id, paid)
    policy = current_policy()
    assert policy.severity.good_payer_min_paid == 6

    snapshot = snapshot_of(account_id)
    now = clock.now()
    bounded = compute(snapshot, now, policy)
    exact = compute(replace(snapshot, paid_invoices=paid), now, policy)

    assert snapshot.paid_invoices == counted
    assert bounded.case == exact.case
    assert (bounded.restrictions, bounded.standing) == (exact.restrictions, exact.standing)
    assert bounded.notices == exact.notices
    [ladder] = [rule for rule in bounded.rules if rule.name == "ladder"]
    assert ladder.facts["severity_factor"] == (2.0 if good_payer else 1.0)


def test_the_paid_count_statement_reads_no_further_than_the_threshold(stripe_sender, test_clock):
    account_id = renewal_in_dunning(stripe_sender)
    add_paid_invoices(account_id, 199)

    with CaptureQueriesContext(connection) as captured:
        snapshot_of(account_id)

    sql = [q["sql"] for q in captured.captured_queries]
    if connection.vendor == "postgresql":
        # One prepared statement (`snapshot_pg`): the cap is its sixth parameter.
        assert "LIMIT $6) p) AS paid" in snapshot_pg.READ_PREPARED.prepare
        [execute] = [
            s.partition(f"EXECUTE {snapshot_pg.READ_PREPARED.name}")[2]
            for s in sql
            if "EXECUTE" in s
        ]
        assert execute.split("(", 1)[1].split(", ")[5] == "6"
    else:
        [head] = [s for s in sql if "AS paid" in s]
        assert "LIMIT 6" in head


def test_a_version_with_a_higher_threshold_still_sees_a_full_count(stripe_sender, test_clock):
    # The active version counts to 6; a candidate (or a case's own version) asking for 12
    # must not see a count cut short at 6, or its good-payer rule would never fire.
    account_id = renewal_in_dunning(stripe_sender)
    add_paid_invoices(account_id, 9)
    stricter = policy_to_document(current_policy())
    stricter["severity"]["good_payer_min_paid"] = 12
    policy_versions.ensure_initial_version()
    v2 = policy_versions.create_version(document=stricter, author="t", reason="12 paid")
    policy_versions.set_candidate(number=v2.number, actor="t", reason="shadow")
    policy_versions.forget_cache()
    with transaction.atomic():
        _, _, active = read_with_policy(account_id=account_id, now=clock.now())  # loads them

    assert policy_versions.paid_count_cap(active) == 12
    assert snapshot_of(account_id).paid_invoices == 9
