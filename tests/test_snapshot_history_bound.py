"""A recompute costs the same after years of paid invoices as after one (#16): the one
statement that reads the snapshot touches a bounded number of invoice and payment-attempt
rows, however long the account's paid history, as PostgreSQL itself counts them."""

import json

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from billing_events.models import Account, Invoice, PaymentAttempt
from core import clock
from dunning.engine import read_snapshot
from dunning.policy import current_policy
from tests.dunning_helpers import account_of
from tests.events import Customer
from tests.snapshot_stories import fails, signs_up
from tests.test_paid_history_bound import add_paid_invoices

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan"),
]
TABLES = {Invoice._meta.db_table, PaymentAttempt._meta.db_table}


def paid_history(account, invoices: int) -> None:
    """Invoices paid on the first attempt, each with its charge, all before the card window
    (as the mirror stores them; delivering them as events is slow)."""
    add_paid_invoices(account.pk, invoices)
    PaymentAttempt.objects.bulk_create(
        PaymentAttempt(
            attempt_key=f"ch_{invoice.stripe_invoice_id}",
            account=account,
            invoice=invoice,
            outcome="succeeded",
            amount=invoice.amount_paid,
            currency=invoice.currency,
            attempted_at=invoice.paid_at,
        )
        for invoice in Invoice.objects.filter(account=account, status=Invoice.Status.PAID)
    )


def a_book(accounts: int) -> None:
    """Other accounts, each with one paid invoice: without them the tables hold only the
    two accounts under test, and PostgreSQL's estimates (half the rows each) favour
    reading whole tables, which no real book would see."""
    made = Account.objects.bulk_create(
        Account(stripe_customer_id=f"cus_Hbook{n}") for n in range(accounts)
    )
    for account in made:
        paid_history(account, invoices=1)


def rows_touched(plan: dict) -> list[tuple[str, int]]:
    """Each node of the plan that read invoice or attempt rows, with the rows it read
    (returned or filtered out) over all its loops."""
    touched = []
    if plan.get("Relation Name") in TABLES:
        rows = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        name = f"{plan['Node Type']} {plan.get('Index Name') or plan['Relation Name']}"
        touched.append((name, rows * plan.get("Actual Loops", 1)))
    for child in plan.get("Plans", ()):
        touched += rows_touched(child)
    return touched


def touched_by_the_read(account_id: int, plan_mode: str) -> list[tuple[str, int]]:
    """Rows touched by the read exactly as the engine sends it (its parameters), run again
    under EXPLAIN ANALYZE with the plan made for those parameters or the generic one
    (which PostgreSQL settles on for a prepared statement after five runs)."""
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        read_snapshot(account_id=account_id, now=clock.now(), policy=current_policy())
    execute = captured.captured_queries[-1]["sql"].split(";\n")[-1]
    assert execute.startswith("EXECUTE"), execute
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL plan_cache_mode = {plan_mode}")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + execute)
        found = cursor.fetchone()[0]
    plan = json.loads(found) if isinstance(found, str) else found
    return rows_touched(plan[0]["Plan"])


@pytest.mark.parametrize("plan_mode", ["force_custom_plan", "force_generic_plan"])
def test_the_read_does_not_follow_the_paid_history(stripe_sender, test_clock, plan_mode):
    short, long = Customer(id="cus_Hshort"), Customer(id="cus_Hlong")
    for cus in (short, long):
        signs_up(stripe_sender, cus)
        fails(stripe_sender, cus)
    paid_history(account_of(long), invoices=1500)
    a_book(accounts=300)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    by_short = touched_by_the_read(account_of(short).pk, plan_mode)
    by_long = touched_by_the_read(account_of(long).pk, plan_mode)

    # The paid count stops at the good-payer threshold: at most that many more rows.
    most = sum(rows for _, rows in by_short) + current_policy().severity.good_payer_min_paid + 2
    assert sum(rows for _, rows in by_long) <= most, by_long
    assert sum(rows for _, rows in by_long) < 50, by_long
