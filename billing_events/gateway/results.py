"""What a gateway call comes to, the gateway interface, and safe logging of both."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

logger = logging.getLogger("billing_events.gateway")

SUCCEEDED = "succeeded"
DECLINED = "declined"
ERROR = "error"
Outcome = Literal["succeeded", "declined", "error"]

# Stripe error codes that mean "the customer must authenticate on-session"; reported with
# decline_code "authentication_required" so they classify as auth_required.
AUTHENTICATION_CODES = frozenset(
    {
        "authentication_required",
        "invoice_payment_intent_requires_action",
        "payment_intent_authentication_failure",
    }
)
_CARD_NUMBER = re.compile(r"\d(?:[ -]?\d){11,18}")


@dataclass(frozen=True)
class PaymentResult:
    """What one attempt to pay an invoice came to.

    outcome: "succeeded" (the invoice is paid), "declined" (the card or issuer refused; the
      codes say why) or "error" (nothing known about the card: see retryable_error).
    invoice_status: Stripe's invoice status after the call, when the answer said so.
    decline_code: the issuer's reason (`decline_code`), or, when Stripe gives none, the error
      code itself (e.g. "expired_card"); codes in AUTHENTICATION_CODES become
      "authentication_required". failure_code keeps Stripe's raw error code.
    retryable_error: the outcome is unknown or transient (transport failure, timeout, 409,
      429, 5xx): retry later with the same idempotency key (see new_key_needed).
    new_key_needed: Stripe stored this error under the idempotency key and would replay it;
      the next attempt needs a new key.
    message: safe text for logs and operators; never card data.
    """

    outcome: Outcome
    invoice_status: str | None = None
    charge_id: str | None = None
    payment_intent_id: str | None = None
    decline_code: str | None = None
    failure_code: str | None = None
    advice_code: str | None = None
    network_advice_code: str | None = None
    network_decline_code: str | None = None
    retryable_error: bool = False
    message: str = ""
    new_key_needed: bool = False


@dataclass(frozen=True)
class SubscriptionResult:
    """What a subscription change came to. status is Stripe's subscription status, if known."""

    ok: bool
    status: str | None = None
    retryable_error: bool = False
    message: str = ""


def succeeded(
    *,
    invoice_status: str = "paid",
    charge_id: str | None = None,
    payment_intent_id: str | None = None,
    message: str = "",
) -> PaymentResult:
    return PaymentResult(
        outcome=SUCCEEDED,
        invoice_status=invoice_status,
        charge_id=charge_id,
        payment_intent_id=payment_intent_id,
        message=message,
    )


def declined(
    decline_code: str,
    *,
    failure_code: str = "card_declined",
    advice_code: str | None = None,
    network_advice_code: str | None = None,
    network_decline_code: str | None = None,
    charge_id: str | None = None,
    payment_intent_id: str | None = None,
    invoice_status: str | None = None,
    message: str = "Your card was declined.",
) -> PaymentResult:
    return PaymentResult(
        outcome=DECLINED,
        invoice_status=invoice_status,
        charge_id=charge_id,
        payment_intent_id=payment_intent_id,
        decline_code=decline_code,
        failure_code=failure_code,
        advice_code=advice_code,
        network_advice_code=network_advice_code,
        network_decline_code=network_decline_code,
        message=message,
    )


def failed(*, retryable: bool, message: str, failure_code: str | None = None) -> PaymentResult:
    return PaymentResult(
        outcome=ERROR, retryable_error=retryable, message=message, failure_code=failure_code
    )


@runtime_checkable
class PaymentGateway(Protocol):
    def pay_invoice(self, *, invoice_id: str, idempotency_key: str) -> PaymentResult:
        """Attempt to collect an open invoice off-session with its default payment method."""
        ...

    def cancel_subscription(
        self, *, subscription_id: str, idempotency_key: str
    ) -> SubscriptionResult:
        """Cancel the subscription now (dunning exhausted)."""
        ...

    def remove_subscription_items(
        self, *, subscription_id: str, price_ids: list[str], idempotency_key: str
    ) -> SubscriptionResult:
        """Revert an upgrade: delete the subscription's items on these prices, no proration."""
        ...


# --- Stripe -----------------------------------------------------------------------------


def safe_text(text: str | None, limit: int = 300) -> str:
    """Stripe's message with anything shaped like a card number masked, one line, bounded."""
    if not text:
        return ""
    return _CARD_NUMBER.sub("[redacted]", " ".join(str(text).split()))[:limit]


def log_payment(invoice_id: str, idempotency_key: str, result: PaymentResult) -> None:
    level = logging.WARNING if result.outcome == ERROR else logging.INFO
    logger.log(
        level,
        "event=gateway_pay_invoice invoice=%s idempotency_key=%s outcome=%s invoice_status=%s "
        "decline_code=%s failure_code=%s advice_code=%s network_advice_code=%s "
        "charge=%s retryable=%s message=%r",
        invoice_id,
        idempotency_key,
        result.outcome,
        result.invoice_status,
        result.decline_code,
        result.failure_code,
        result.advice_code,
        result.network_advice_code,
        result.charge_id,
        result.retryable_error,
        result.message,
    )


def log_subscription(action: str, subscription_id: str, result: SubscriptionResult) -> None:
    logger.log(
        logging.INFO if result.ok else logging.WARNING,
        "event=gateway_%s subscription=%s ok=%s status=%s retryable=%s message=%r",
        action,
        subscription_id,
        result.ok,
        result.status,
        result.retryable_error,
        result.message,
    )
