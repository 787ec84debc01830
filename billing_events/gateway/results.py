"""What a gateway call comes to, the gateway interface, and safe logging of both."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

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


@dataclass(frozen=True)
class InvoiceResult:
    """What a change to an invoice (void) came to. status is Stripe's invoice status, if known."""

    ok: bool
    status: str
    retryable_error: bool = False
    message: str = ""


@dataclass(frozen=True)
class FailureLookup:
    """The latest payment attempt on an invoice, as Stripe records it.

    Asked for when `invoice.payment_failed` came before the charge or intent event that
    carries the decline code: until the decline class is known the engine must not charge
    again.

    found: a failed charge or intent with its decline data was found.
    retryable_error: Stripe could not be asked (network, 429, 5xx): ask again later.
    outcome: "failed" or "succeeded" for the latest attempt, "" when there is none yet.
    decline_code: normalised as PaymentResult.decline_code (the error code when the issuer
      gave no reason; authentication codes become "authentication_required").
    card_brand: lowercase ("visa", "mastercard"); no other card data is kept.
    attempted_at: when the latest charge was created (UTC).
    """

    found: bool
    retryable_error: bool = False
    message: str = ""
    outcome: str = ""
    decline_code: str = ""
    failure_code: str = ""
    advice_code: str = ""
    network_advice_code: str = ""
    network_decline_code: str = ""
    card_brand: str = ""
    payment_method: str = ""
    charge_id: str = ""
    payment_intent_id: str = ""
    attempted_at: datetime | None = None


def failure_lookup_as_dict(result: FailureLookup) -> dict[str, Any]:
    """JSON-safe form of a lookup, for an outbox row (datetime as ISO 8601)."""
    data = asdict(result)
    if result.attempted_at is not None:
        data["attempted_at"] = result.attempted_at.isoformat()
    return data


def normalised_decline_code(decline_code: str | None, code: str | None) -> str:
    """The issuer's reason, else the error code itself so it still classifies."""
    if decline_code:
        return decline_code
    if code in AUTHENTICATION_CODES:
        return "authentication_required"
    if code and code != "card_declined":
        return code
    return ""


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

    def revert_subscription(
        self, *, subscription_id: str, items: list[dict], idempotency_key: str
    ) -> SubscriptionResult:
        """Put the subscription back to exactly `items` ({"price", "quantity"}), no proration."""
        ...

    def void_invoice(self, *, invoice_id: str, idempotency_key: str) -> InvoiceResult:
        """Void an open invoice; a paid one is refused with status "paid" (do not void)."""
        ...

    def latest_failure(self, *, invoice_id: str) -> FailureLookup:
        """The decline data of the invoice's latest payment attempt, read from Stripe."""
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


def log_failure_lookup(invoice_id: str, result: FailureLookup) -> None:
    level = logging.WARNING if result.retryable_error else logging.INFO
    logger.log(
        level,
        "event=gateway_latest_failure invoice=%s found=%s outcome=%s decline_code=%s "
        "failure_code=%s advice_code=%s network_advice_code=%s network_decline_code=%s "
        "card_brand=%s charge=%s payment_intent=%s retryable=%s message=%r",
        invoice_id,
        result.found,
        result.outcome,
        result.decline_code,
        result.failure_code,
        result.advice_code,
        result.network_advice_code,
        result.network_decline_code,
        result.card_brand,
        result.charge_id,
        result.payment_intent_id,
        result.retryable_error,
        result.message,
    )


def log_invoice(action: str, invoice_id: str, result: InvoiceResult) -> None:
    logger.log(
        logging.INFO if result.ok else logging.WARNING,
        "event=gateway_%s invoice=%s ok=%s status=%s retryable=%s message=%r",
        action,
        invoice_id,
        result.ok,
        result.status,
        result.retryable_error,
        result.message,
    )
