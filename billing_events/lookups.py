"""Failures read back from Stripe's API, merged into the same mirror rows as webhooks.

A lookup and the webhook about the same charge build the same attempt key, so
whichever comes first creates the row and the other only fills its gaps.
"""

from datetime import UTC, datetime
from typing import Any

from django.db import transaction

from billing_events.facts import AttemptFact, attempt_key, card_brand
from billing_events.mirror import upsert_attempt
from billing_events.models import Invoice, PaymentAttempt
from core.locks import lock_account


def _text(found: dict, key: str) -> str:
    value = found.get(key)
    return "" if value is None else str(value)


def _when(value: Any, fallback: datetime) -> datetime:
    if not value:
        return fallback
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def looked_up_attempt(
    found: dict,
    *,
    customer_id: str,
    stripe_invoice_id: str,
    amount: int,
    currency: str,
    at: datetime,
) -> AttemptFact:
    """The failed attempt a lookup describes. Pure. Without the attempt's own time, the
    lookup's time stands in: it is later than the attempt, so a webhook's earlier,
    exact time wins the merge."""
    charge_id = _text(found, "charge_id")
    payment_intent_id = _text(found, "payment_intent_id")
    key = attempt_key(charge_id=charge_id, payment_intent_id=payment_intent_id)
    if not key:
        raise ValueError("a looked-up failure needs a charge id or a payment intent id")
    return AttemptFact(
        attempt_key=key,
        customer_id=customer_id,
        invoice_id=stripe_invoice_id,
        charge_id=charge_id,
        payment_intent_id=payment_intent_id,
        payment_method=_text(found, "payment_method"),
        outcome=PaymentAttempt.Outcome.FAILED,
        amount=amount,
        currency=currency.lower(),
        decline_code=_text(found, "decline_code"),
        failure_code=_text(found, "failure_code"),
        advice_code=_text(found, "advice_code"),
        network_advice_code=_text(found, "network_advice_code"),
        network_decline_code=_text(found, "network_decline_code"),
        attempted_at=_when(found.get("attempted_at"), at),
        card_brand=card_brand(found.get("card_brand")),
    )


def merge_looked_up_failure(
    *, account_id: int, stripe_invoice_id: str, found: dict, at: datetime
) -> bool:
    """Merge a failure read from Stripe's API as a failed PaymentAttempt; True when a row
    was created or changed. `found` may also carry `amount` and `currency` (the charge's);
    otherwise the mirrored invoice's remaining amount stands in, and a missing amount is
    a gap the webhook fills later."""
    with transaction.atomic():
        # The same per-account lock as webhook processing and the engine.
        account = lock_account(account_id)
        invoice = Invoice.objects.filter(stripe_invoice_id=stripe_invoice_id).first()
        amount = found.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool):
            amount = (invoice.amount_remaining or invoice.amount_due) if invoice else 0
        currency = _text(found, "currency") or (invoice.currency if invoice else "")
        fact = looked_up_attempt(
            found,
            customer_id=account.stripe_customer_id,
            stripe_invoice_id=stripe_invoice_id,
            amount=amount,
            currency=currency,
            at=at,
        )
        _, changed = upsert_attempt(account, fact)
    return changed
