"""Whether an invoice went through dunning: the rule in Python, for the decision
(`decision_rules.membership`), and its SQL twin, for the snapshot that loads the invoices
(`snapshot_sql.INVOICES`, `snapshot_batch`). They live together so they change together;
tests/test_snapshot_rules_agree.py holds the two to each other."""

from django.db import connection

from billing_events.models import PaymentAttempt
from dunning.snapshot import InvoiceView


def went_through_dunning(invoice: InvoiceView, failed: set[int]) -> bool:
    """An invoice whose collection failed at least once: unpaid after an attempt,
    written off, or settled only after a failed attempt."""
    if invoice.status == "uncollectible":
        return True
    failed_once = invoice.payment_failed or invoice.pk in failed
    if invoice.status == "open":
        return invoice.attempt_count > 0 or failed_once
    if invoice.status in ("paid", "void"):
        return invoice.attempt_count > 1 or failed_once
    return False


_ATTEMPTS = connection.ops.quote_name(PaymentAttempt._meta.db_table)

# The statuses of an invoice the snapshot loads for this rule (found through the
# (account, status) index): a paid or void one is never loaded for it.
UNSETTLED = "'open', 'uncollectible'"

# The same rule in SQL, over `i` (an invoice row), for the unsettled invoices.
WENT_THROUGH_DUNNING = f"""i.status = 'uncollectible'
  OR (i.status = 'open' AND (
    i.attempt_count > 0 OR i.payment_failed_at IS NOT NULL
    OR EXISTS (SELECT 1 FROM {_ATTEMPTS} p
               WHERE p.invoice_id = i.id AND p.outcome = 'failed')))"""
