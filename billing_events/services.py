"""The billing_events service API other apps call: the payment gateway, and recording what
a payment retry came to in the mirror stores (so the engine need not wait for webhooks)."""

from dataclasses import asdict
from datetime import datetime

from django.db import connection

from billing_events.facts import AttemptFact
from billing_events.gateway import PaymentGateway, PaymentResult, gateway_from_settings
from billing_events.mirror import merge_attempt
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from core.prepared import PreparedStatement

__all__ = ["PaymentGateway", "PaymentResult", "gateway", "record_retry_result"]


def gateway() -> PaymentGateway:
    return gateway_from_settings()


def open_invoice(*, stripe_invoice_id: str) -> Invoice | None:
    return Invoice.objects.filter(
        stripe_invoice_id=stripe_invoice_id, status=Invoice.Status.OPEN
    ).first()


def failed_attempts(*, stripe_invoice_id: str) -> int:
    """The failed charges known for an invoice (from webhooks, retries and look-ups)."""
    return PaymentAttempt.objects.filter(
        invoice__stripe_invoice_id=stripe_invoice_id, outcome="failed"
    ).count()


def record_retry_result(
    *, account_id: int, stripe_invoice_id: str, attempt_key: str, result: dict, at: datetime
) -> None:
    """Merge one retry's outcome into the mirror with the same rules as webhooks use; the
    webhooks Stripe sends for the same charge later merge into the same rows. On
    PostgreSQL one statement (RECORD_RETRY) does what the ORM does here in eight."""
    outcome = result["outcome"]
    if outcome not in ("succeeded", "declined"):
        return  # nothing is known about the card: no attempt to record
    if connection.vendor == "postgresql":
        _record_retry_sql(account_id, stripe_invoice_id, attempt_key, result, at)
    else:
        _record_retry_orm(account_id, stripe_invoice_id, attempt_key, result, at)


def _record_retry_orm(
    account_id: int, stripe_invoice_id: str, attempt_key: str, result: dict, at: datetime
) -> None:
    outcome = result["outcome"]
    account = Account.objects.get(pk=account_id)
    invoice = Invoice.objects.filter(stripe_invoice_id=stripe_invoice_id).first()
    merge_attempt(
        account,
        AttemptFact(
            attempt_key=result.get("charge_id") or attempt_key,
            customer_id=account.stripe_customer_id,
            invoice_id=stripe_invoice_id,
            charge_id=result.get("charge_id") or "",
            payment_intent_id=result.get("payment_intent_id") or "",
            payment_method=account.default_payment_method,
            outcome="succeeded" if outcome == "succeeded" else "failed",
            amount=invoice.amount_remaining if invoice else 0,
            currency=invoice.currency if invoice else "",
            decline_code=result.get("decline_code") or "",
            failure_code=result.get("failure_code") or "",
            advice_code=result.get("advice_code") or "",
            network_advice_code=result.get("network_advice_code") or "",
            network_decline_code=result.get("network_decline_code") or "",
            attempted_at=at,
        ),
    )
    if invoice is not None:
        updates = {"attempt_count": invoice.attempt_count + 1}
        if outcome == "succeeded" and invoice.status in (
            Invoice.Status.OPEN,
            Invoice.Status.UNCOLLECTIBLE,
        ):
            updates.update(
                status=Invoice.Status.PAID,
                paid_at=invoice.paid_at or at,
                amount_paid=invoice.amount_due,
                amount_remaining=0,
            )
        Invoice.objects.filter(pk=invoice.pk).update(**updates)


def _t(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


# The attempt merged as `mirror.upsert_attempt` merges it (a field already known is kept,
# a gap is filled; the earliest time; succeeded wins; the invoice linked once known), its
# amount the invoice's remaining amount before this payment, and the invoice counted and,
# when paid, settled as above. Data-modifying CTEs see one snapshot: `old` is the invoice
# before the UPDATE in `paid`.
ATTEMPT_TEXT = (
    "stripe_invoice_id",
    "stripe_charge_id",
    "stripe_payment_intent_id",
    "payment_method",
    "decline_code",
    "failure_code",
    "advice_code",
    "network_advice_code",
    "network_decline_code",
    "card_brand",
    "currency",
)
MERGED_INVOICE = "COALESCE(NULLIF(p.stripe_invoice_id, ''), EXCLUDED.stripe_invoice_id)"
RECORD_RETRY = f"""
WITH old AS (
  SELECT id, amount_remaining, currency FROM {_t(Invoice)} WHERE stripe_invoice_id = %(invoice)s
), paid AS (
  UPDATE {_t(Invoice)} i SET attempt_count = i.attempt_count + 1,
    status = CASE WHEN %(succeeded)s AND i.status IN ('open', 'uncollectible') THEN 'paid'
             ELSE i.status END,
    paid_at = CASE WHEN %(succeeded)s AND i.status IN ('open', 'uncollectible')
              THEN COALESCE(i.paid_at, %(at)s) ELSE i.paid_at END,
    amount_paid = CASE WHEN %(succeeded)s AND i.status IN ('open', 'uncollectible')
                  THEN i.amount_due ELSE i.amount_paid END,
    amount_remaining = CASE WHEN %(succeeded)s AND i.status IN ('open', 'uncollectible')
                       THEN 0 ELSE i.amount_remaining END
  FROM old WHERE i.id = old.id
)
INSERT INTO {_t(PaymentAttempt)} AS p (attempt_key, account_id, invoice_id, outcome, amount,
  customer_initiated, attempted_at, {", ".join(ATTEMPT_TEXT)})
SELECT %(key)s, a.id, old.id, %(outcome)s, COALESCE(old.amount_remaining, 0), false, %(at)s,
  %(invoice)s, %(charge)s, %(intent)s, a.default_payment_method, %(decline_code)s,
  %(failure_code)s, %(advice_code)s, %(network_advice_code)s, %(network_decline_code)s, '',
  COALESCE(old.currency, '')
FROM {_t(Account)} a LEFT JOIN old ON true WHERE a.id = %(account)s
ON CONFLICT (attempt_key) DO UPDATE SET
  {", ".join(f"{c} = COALESCE(NULLIF(p.{c}, ''), EXCLUDED.{c})" for c in ATTEMPT_TEXT)},
  amount = COALESCE(NULLIF(p.amount, 0), EXCLUDED.amount),
  attempted_at = LEAST(p.attempted_at, EXCLUDED.attempted_at),
  outcome = CASE WHEN EXCLUDED.outcome = 'succeeded' THEN 'succeeded' ELSE p.outcome END,
  invoice_id = COALESCE(p.invoice_id, (SELECT i.id FROM {_t(Invoice)} i
    WHERE i.stripe_invoice_id = {MERGED_INVOICE} AND {MERGED_INVOICE} <> ''))"""


RECORD_RETRY_PREPARED = PreparedStatement(
    "billing_record_retry",
    RECORD_RETRY,
    {
        "account": "bigint",
        "invoice": "text",
        "key": "text",
        "succeeded": "boolean",
        "outcome": "text",
        "at": "timestamptz",
        "charge": "text",
        "intent": "text",
        **dict.fromkeys(
            (
                "decline_code",
                "failure_code",
                "advice_code",
                "network_advice_code",
                "network_decline_code",
            ),
            "text",
        ),
    },
)


def _record_retry_sql(
    account_id: int, stripe_invoice_id: str, attempt_key: str, result: dict, at: datetime
) -> None:
    params = {
        "account": account_id,
        "invoice": stripe_invoice_id,
        "key": result.get("charge_id") or attempt_key,
        "succeeded": result["outcome"] == "succeeded",
        "outcome": "succeeded" if result["outcome"] == "succeeded" else "failed",
        "at": at,
        "charge": result.get("charge_id") or "",
        "intent": result.get("payment_intent_id") or "",
    }
    for name in ("decline_code", "failure_code", "advice_code"):
        params[name] = result.get(name) or ""
    for name in ("network_advice_code", "network_decline_code"):
        params[name] = result.get(name) or ""
    with connection.cursor() as cursor:
        cursor.execute(RECORD_RETRY_PREPARED.sql_to_send(), params)


def subscription_cancelled(*, subscription_id: str) -> bool:
    return Subscription.objects.filter(
        stripe_subscription_id=subscription_id, status="canceled"
    ).exists()


def record_subscription_cancelled(*, account_id: int, subscription_id: str, at: datetime) -> None:
    """The cancellation dunning asked for went through; the webhook Stripe sends for it
    (customer.subscription.deleted) merges into the same row."""
    subscription, created = Subscription.objects.get_or_create(
        stripe_subscription_id=subscription_id,
        defaults={
            "account_id": account_id,
            "status": "canceled",
            "canceled_at": at,
            "version": at,
            "version_event_id": "dunning:cancel",
        },
    )
    if not created and subscription.status != "canceled":
        subscription.status = "canceled"
        subscription.canceled_at = subscription.canceled_at or at
        subscription.save(update_fields=["status", "canceled_at"])


def result_as_dict(result: PaymentResult) -> dict:
    return asdict(result)


def unsettled_invoice(*, stripe_invoice_id: str) -> Invoice | None:
    """The invoice while money is still owed on it (open, or written off by Stripe)."""
    return Invoice.objects.filter(
        stripe_invoice_id=stripe_invoice_id,
        status__in=(Invoice.Status.OPEN, Invoice.Status.UNCOLLECTIBLE),
    ).first()


def record_upgrade_reverted(
    *, subscription_id: str, items: list[dict], voided_invoice_ids: list[str], at: datetime
) -> None:
    """Dunning put the subscription back to its items before the upgrade and voided the
    unpaid upgrade invoices; the webhooks Stripe sends for both merge into the same rows."""
    Subscription.objects.filter(stripe_subscription_id=subscription_id).update(
        price_ids=sorted({item["price"] for item in items})
    )
    for invoice in Invoice.objects.filter(stripe_invoice_id__in=voided_invoice_ids).exclude(
        status__in=(Invoice.Status.PAID, Invoice.Status.VOID)
    ):
        invoice.status = Invoice.Status.VOID
        invoice.voided_at = invoice.voided_at or at
        invoice.amount_remaining = 0
        invoice.save(update_fields=["status", "voided_at", "amount_remaining"])


def merge_looked_up_failure(
    *, account_id: int, stripe_invoice_id: str, found: dict, at: datetime
) -> bool:
    """A failure read from Stripe's API, merged like the webhook for the same charge."""
    from billing_events.lookups import merge_looked_up_failure as merge

    return merge(account_id=account_id, stripe_invoice_id=stripe_invoice_id, found=found, at=at)
