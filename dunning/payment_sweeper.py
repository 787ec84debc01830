"""Resolving pay-bad-debt requests that crashed mid-way (left `processing`).

A request is stale once every gateway call it could have made has timed out. For each
stale request the sweeper asks Stripe what became of each invoice (a read: it never
charges on its own), then settles the request as if the gateway had answered: an invoice
Stripe shows paid is recorded as paid and the account goes to the engine as BAD_DEBT_PAID;
an invoice not paid is answered as not collected, which frees the account for a new
request. If Stripe cannot be asked, the request waits for the next sweep; support sees it
meanwhile and can release it (`bad_debt_payment.release`).
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings

from billing_events import services as billing
from billing_events.gateway import PaymentResult, failed, succeeded
from core import clock
from dunning.bad_debt_payment import PROCESSING, settle
from dunning.models import BadDebtPayment

logger = logging.getLogger(__name__)

SWEEPER = "sweeper"
MARGIN = timedelta(seconds=60)


def stale_after(invoice_count: int) -> timedelta:
    """Longer than the request could still be talking to Stripe (one bounded call each)."""
    return MARGIN + timedelta(seconds=settings.STRIPE_API_TIMEOUT_SECONDS * max(invoice_count, 1))


def is_stale(payment: BadDebtPayment, now: datetime) -> bool:
    invoices = payment.response.get("request", {}).get("invoices", [])
    return payment.status == PROCESSING and now - payment.created_at >= stale_after(len(invoices))


def look_up(invoice_id: str) -> PaymentResult | None:
    """What Stripe says of the invoice now; None when Stripe could not be asked."""
    found = billing.gateway().latest_failure(invoice_id=invoice_id)
    if found.retryable_error:
        return None
    if found.outcome == "succeeded":
        return succeeded(
            charge_id=found.charge_id or None,
            payment_intent_id=found.payment_intent_id or None,
            message="paid (found at Stripe after the request crashed)",
        )
    return failed(retryable=False, message="not collected (the request crashed before payment)")


def resolve_crashed_payments(*, limit: int = 100) -> list[int]:
    """Settle every stale processing request Stripe can tell us about; returns their ids."""
    now = clock.now()
    resolved = []
    candidates = BadDebtPayment.objects.filter(status=PROCESSING).order_by("created_at")[:limit]
    for payment in candidates:
        if not is_stale(payment, now):
            continue
        invoices = payment.response.get("request", {}).get("invoices", [])
        if not invoices:  # made before requests kept their invoices: support releases it
            continue
        results = {invoice_id: look_up(invoice_id) for invoice_id in invoices}
        if any(result is None for result in results.values()):
            logger.warning("event=bad_debt_payment_lookup_failed payment=%s", payment.pk)
            continue
        answer = settle(payment.pk, results, actor=SWEEPER)
        logger.info(
            "event=bad_debt_payment_resolved payment=%s status=%s",
            payment.pk,
            answer.body.get("status"),
        )
        resolved.append(payment.pk)
    return resolved
