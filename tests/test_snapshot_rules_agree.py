"""The snapshot's SQL loads exactly the unsettled invoices the decision counts as having
gone through dunning: `in_dunning.WENT_THROUGH_DUNNING` (in `snapshot_sql.INVOICES`) is the
SQL twin of `in_dunning.went_through_dunning`, and the two must never disagree."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_events.models import Account, Invoice, PaymentAttempt
from dunning.in_dunning import went_through_dunning
from dunning.snapshot import InvoiceView
from dunning.snapshot_pg import lock_and_read

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STATUSES = ["draft", "open", "uncollectible", "paid", "void"]

invoices = st.lists(
    st.fixed_dictionaries(
        {
            "status": st.sampled_from(STATUSES),
            "attempt_count": st.integers(0, 3),
            "payment_failed": st.booleans(),
            "failed_attempt": st.booleans(),
            "succeeded_attempt": st.booleans(),
        }
    ),
    min_size=1,
    max_size=6,
)


def view(invoice: Invoice) -> InvoiceView:
    return InvoiceView(
        pk=invoice.pk,
        stripe_invoice_id=invoice.stripe_invoice_id,
        status=invoice.status,
        amount_remaining=invoice.amount_remaining,
        currency=invoice.currency,
        billing_reason=invoice.billing_reason,
        attempt_count=invoice.attempt_count,
        payment_failed_at=invoice.payment_failed_at,
        paid_out_of_band=invoice.paid_out_of_band,
        opened_at=invoice.stripe_created,
        subscription_id=invoice.stripe_subscription_id,
        case_id=None,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=invoices)
def test_the_sql_loads_what_the_rule_counts(rows):
    with transaction.atomic():
        account = Account.objects.create(stripe_customer_id="cus_agree")
        made, failed = [], set()
        for n, row in enumerate(rows):
            invoice = Invoice.objects.create(
                stripe_invoice_id=f"in_agree_{n}",
                account=account,
                status=row["status"],
                amount_due=4900,
                amount_remaining=0 if row["status"] in ("paid", "void") else 4900,
                currency="usd",
                attempt_count=row["attempt_count"],
                stripe_created=NOW - timedelta(days=3),
                payment_failed_at=NOW - timedelta(days=2) if row["payment_failed"] else None,
                version=NOW,
                version_event_id=f"evt_{n}",
            )
            for outcome in ("failed", "succeeded"):
                if row[f"{outcome}_attempt"]:
                    PaymentAttempt.objects.create(
                        attempt_key=f"ch_{outcome}_{n}",
                        account=account,
                        invoice=invoice,
                        outcome=outcome,
                        amount=4900,
                        currency="usd",
                        attempted_at=NOW - timedelta(days=1),
                    )
            if row["failed_attempt"]:
                failed.add(invoice.pk)
            made.append(invoice)

        _, snapshot = lock_and_read(
            account_id=account.pk, now=NOW, card_window=timedelta(days=30), memory=timedelta(365)
        )

        loaded = {i.pk for i in snapshot.invoices}
        unsettled = [i for i in made if i.status in ("open", "uncollectible")]
        assert loaded == {i.pk for i in unsettled if went_through_dunning(view(i), failed)}, rows
        transaction.set_rollback(True)
