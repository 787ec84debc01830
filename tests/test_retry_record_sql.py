"""Recording a retry's result in one plain-SQL statement (PostgreSQL) leaves the mirror
exactly as the ORM path (SQLite, the embedded default) does, case by case."""

from datetime import UTC, datetime, timedelta

import pytest

from billing_events import services
from billing_events.models import Account, Invoice, PaymentAttempt

pytestmark = pytest.mark.django_db
AT = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
DECLINED = {
    "outcome": "declined",
    "charge_id": "ch_retry",
    "payment_intent_id": "pi_retry",
    "decline_code": "insufficient_funds",
    "failure_code": "card_declined",
    "advice_code": "try_again_later",
    "network_advice_code": "",
    "network_decline_code": "51",
}
SUCCEEDED = {"outcome": "succeeded", "charge_id": "ch_retry", "payment_intent_id": "pi_retry"}
NO_CHARGE_ID = {**DECLINED, "charge_id": None}
EARLIER_WEBHOOK = {
    "stripe_charge_id": "ch_retry",
    "outcome": "failed",
    "amount": 0,
    "currency": "",
    "decline_code": "",
    "card_brand": "visa",
    "attempted_at": AT + timedelta(seconds=5),
}

CASES = [
    # (name, invoice status or None for an unknown invoice, existing attempt, result)
    ("declined, open invoice", "open", None, DECLINED),
    ("succeeded, open invoice", "open", None, SUCCEEDED),
    ("succeeded, uncollectible invoice", "uncollectible", None, SUCCEEDED),
    ("succeeded, invoice already paid", "paid", None, SUCCEEDED),
    ("declined, unknown invoice", None, None, DECLINED),
    ("no charge id: the attempt key", "open", None, NO_CHARGE_ID),
    ("the webhook came first: gaps filled", "open", {**EARLIER_WEBHOOK, "linked": True}, DECLINED),
    ("the webhook came first, unlinked", "open", {**EARLIER_WEBHOOK, "linked": False}, SUCCEEDED),
]


def book(tag: str, invoice_status: str | None, existing: dict | None) -> int:
    account = Account.objects.create(
        stripe_customer_id=f"cus_{tag}", default_payment_method="pm_card"
    )
    invoice = None
    if invoice_status is not None:
        invoice = Invoice.objects.create(
            stripe_invoice_id=f"in_{tag}",
            account=account,
            status=invoice_status,
            amount_due=2500,
            amount_paid=2500 if invoice_status == "paid" else 0,
            amount_remaining=0 if invoice_status == "paid" else 2500,
            currency="eur",
            attempt_count=1,
            stripe_created=AT - timedelta(days=3),
            paid_at=AT - timedelta(days=1) if invoice_status == "paid" else None,
            version=AT - timedelta(days=3),
            version_event_id="evt_1",
        )
    if existing is not None:
        values = {k: v for k, v in existing.items() if k != "linked"}
        PaymentAttempt.objects.create(
            attempt_key=f"ch_retry_{tag}",
            account=account,
            invoice=invoice if existing["linked"] else None,
            stripe_invoice_id=f"in_{tag}",
            **{**values, "stripe_charge_id": f"ch_retry_{tag}"},
        )
    return account.pk


def result_for(tag: str, result: dict) -> dict:
    return {**result, "charge_id": f"ch_retry_{tag}" if result["charge_id"] else None}


def mirror(tag: str) -> dict:
    def normal(row: dict) -> dict:
        skip = {"id", "account_id", "invoice_id", "version_event_id"}
        out = {k: v for k, v in row.items() if k not in skip}
        return {k: v.replace(tag, "X") if isinstance(v, str) else v for k, v in out.items()}

    attempts = PaymentAttempt.objects.filter(account__stripe_customer_id=f"cus_{tag}")
    return {
        "invoices": [
            normal(r) for r in Invoice.objects.filter(stripe_invoice_id=f"in_{tag}").values()
        ],
        "attempts": [normal(r) for r in attempts.values()],
        "linked": [r.invoice_id is not None for r in attempts],
    }


@pytest.mark.parametrize(("name", "status", "existing", "result"), CASES, ids=[c[0] for c in CASES])
def test_the_sql_record_matches_the_orm_record(name, status, existing, result):
    for tag, record in (("orm", services._record_retry_orm), ("sql", services._record_retry_sql)):
        account_id = book(tag, status, existing)
        record(account_id, f"in_{tag}", f"attempt:retry:in_{tag}:2:1", result_for(tag, result), AT)

    assert mirror("sql") == mirror("orm")
    assert mirror("sql")["attempts"]  # something was recorded
