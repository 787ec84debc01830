"""The billing_events service API other apps call: the payment gateway, and recording what
a payment retry came to in the mirror stores (so the engine need not wait for webhooks)."""

from dataclasses import asdict
from datetime import datetime

from billing_events.gateway import PaymentGateway, PaymentResult, gateway_from_settings
from billing_events.mirror import merge_attempt
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from billing_events.normalize import AttemptFact

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
    webhooks Stripe sends for the same charge later merge into the same rows."""
    outcome = result["outcome"]
    if outcome not in ("succeeded", "declined"):
        return  # nothing is known about the card: no attempt to record
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
