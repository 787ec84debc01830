"""Stripe's answers read into the payment gateway's results: errors and declines, a paid
invoice, a subscription's item changes, an invoice's latest failed attempt. Pure: no calls,
`stripe_api.StripeGateway` makes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import stripe

from billing_events.gateway.results import (
    DECLINED,
    ERROR,
    FailureLookup,
    InvoiceResult,
    PaymentResult,
    SubscriptionResult,
    normalised_decline_code,
    safe_text,
    succeeded,
)

# API version 2025-03-31 ("basil") moved an invoice's `charge` and `payment_intent` into the
# includable `payments` list; versions before it answer the older shape.
INVOICE_PAYMENTS_SINCE = "2025-03-31"
# One retrieve brings the latest attempt and its error (Stripe expands at most 4 levels).
FAILURE_EXPAND = [
    "payments",
    "payments.data.payment.payment_intent",
    "payments.data.payment.payment_intent.latest_charge",
    "payments.data.payment.charge",
]
FAILURE_EXPAND_BEFORE_PAYMENTS = ["charge", "payment_intent"]


def error_body(error: stripe.StripeError) -> dict[str, Any]:
    body = error.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return {}


def object_field(obj: stripe.StripeObject, name: str) -> Any:
    return obj.to_dict(recursive=False).get(name)


def object_id(value: Any) -> str | None:
    """An expandable field: an id string or an object with an id."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return value.get("id")
    return None


def _should_retry_header(error: stripe.StripeError) -> str | None:
    headers = error.headers or {}
    for name, value in headers.items():
        if name.lower() == "stripe-should-retry":
            return str(value).lower()
    return None


def is_retryable(error: stripe.StripeError) -> bool:
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    if _should_retry_header(error) == "true":
        return True
    status = error.http_status
    if status is None or status in (409, 429) or status >= 500:
        return True
    # An unreadable answer with a 2xx code: we cannot tell what happened.
    return isinstance(error, stripe.APIError) and status < 400


def transport_message(error: stripe.StripeError) -> str:
    if isinstance(error, stripe.APIConnectionError):
        cause = error.__cause__
        kind = type(cause).__name__ if cause is not None else "connection error"
        return f"could not reach Stripe ({kind})"
    stripe_message = safe_text(error_body(error).get("message"))
    text = f"Stripe answered HTTP {error.http_status} ({type(error).__name__})"
    return f"{text}: {stripe_message}" if stripe_message else text


def error_result(error: stripe.StripeError) -> PaymentResult:
    retryable = is_retryable(error)
    replays = (
        retryable and (error.http_status or 0) >= 500 and _should_retry_header(error) == "false"
    )
    return PaymentResult(
        outcome=ERROR,
        retryable_error=retryable,
        new_key_needed=replays,
        failure_code=error_body(error).get("code"),
        message=transport_message(error),
    )


def declined_result(error: stripe.CardError) -> PaymentResult:
    body = error_body(error)
    code = body.get("code") or error.code
    decline_code = normalised_decline_code(body.get("decline_code"), code) or None
    payment_intent = body.get("payment_intent")
    charge_id = object_id(body.get("charge"))
    if charge_id is None and isinstance(payment_intent, dict):
        charge_id = object_id(payment_intent.get("latest_charge"))
    return PaymentResult(
        outcome=DECLINED,
        charge_id=charge_id,
        payment_intent_id=object_id(payment_intent),
        decline_code=decline_code,
        failure_code=code,
        advice_code=body.get("advice_code"),
        network_advice_code=body.get("network_advice_code"),
        network_decline_code=body.get("network_decline_code"),
        message=safe_text(body.get("message")) or "card declined",
    )


def paid_result(invoice: dict[str, Any]) -> PaymentResult:
    """A successful pay returns the invoice; its payments say which charge paid it."""
    charge_id = object_id(invoice.get("charge"))  # API versions before 2025-03-31
    payment_intent_id = object_id(invoice.get("payment_intent"))
    payments = invoice.get("payments") or {}
    for invoice_payment in payments.get("data") or []:
        if invoice_payment.get("status") not in (None, "paid"):
            continue
        payment = invoice_payment.get("payment") or {}
        charge_id = charge_id or object_id(payment.get("charge"))
        intent = payment.get("payment_intent")
        payment_intent_id = payment_intent_id or object_id(intent)
        if isinstance(intent, dict):
            charge_id = charge_id or object_id(intent.get("latest_charge"))
    status = invoice.get("status")
    if status == "paid":
        return succeeded(charge_id=charge_id, payment_intent_id=payment_intent_id)
    # Pay answered 200 without a paid invoice (e.g. a payment still processing): not a
    # failure of the card, and not money yet. The same key would replay this answer, so the
    # next look needs a new key (or the invoice.paid webhook settles it first).
    return PaymentResult(
        outcome=ERROR,
        invoice_status=status,
        charge_id=charge_id,
        payment_intent_id=payment_intent_id,
        retryable_error=True,
        new_key_needed=True,
        message=f"invoice is {status} after pay",
    )


def subscription_error(error: stripe.StripeError) -> SubscriptionResult:
    return SubscriptionResult(
        ok=False, retryable_error=is_retryable(error), message=transport_message(error)
    )


def invoice_error(error: stripe.StripeError) -> InvoiceResult:
    return InvoiceResult(
        ok=False, status="", retryable_error=is_retryable(error), message=transport_message(error)
    )


def is_missing(error: stripe.StripeError) -> bool:
    """Stripe's "No such ..." (404 resource_missing), not an unknown URL."""
    return error.http_status == 404 and error_body(error).get("code") == "resource_missing"


def wanted_items(items: list[dict]) -> dict[str, int | None] | None:
    """price -> quantity, or None when a price repeats (Stripe allows one item per price)."""
    wanted: dict[str, int | None] = {}
    for item in items:
        if item["price"] in wanted:
            return None
        wanted[item["price"]] = item.get("quantity")
    return wanted


def subscription_item_changes(
    current: list[dict[str, Any]], wanted: dict[str, int | None]
) -> list[dict[str, Any]]:
    """The `items` of one subscription update that turns `current` into `wanted`.

    current: the subscription's items as Stripe lists them; wanted: price id -> quantity
    (None leaves the quantity alone, e.g. metered prices). Deletions, then quantity changes,
    then new prices, in a stable order so a retry sends the same parameters.
    """
    deletions: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    present: set[str] = set()
    for item in current:
        price = object_id(item.get("price"))
        if price not in wanted:
            deletions.append({"id": item["id"], "deleted": True})
            continue
        present.add(price)
        quantity = wanted[price]
        if quantity is not None and item.get("quantity") != quantity:
            updates.append({"id": item["id"], "quantity": quantity})
    additions = []
    for price, quantity in wanted.items():
        if price not in present:
            additions.append(
                {"price": price} if quantity is None else {"price": price, "quantity": quantity}
            )
    return deletions + updates + additions


def _latest_attempt(invoice: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The charge and payment intent of the invoice's latest payment, as far as expanded.

    An id that came back unexpanded becomes {"id": ...}; a missing one, {}.
    """

    def as_object(value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        return {"id": value} if isinstance(value, str) and value else {}

    entries = (invoice.get("payments") or {}).get("data") or []
    if entries:
        # Stripe lists newest first; max keeps the first of equal `created`.
        entry = max(entries, key=lambda e: e.get("created") or 0)
        payment = entry.get("payment") or {}
        intent = as_object(payment.get("payment_intent"))
        charge = as_object(payment.get("charge") or intent.get("latest_charge"))
        return charge, intent
    intent = as_object(invoice.get("payment_intent"))  # API versions before 2025-03-31
    charge = as_object(invoice.get("charge") or intent.get("latest_charge"))
    return charge, intent


def failure_from_invoice(invoice: dict[str, Any]) -> FailureLookup:
    """Read the latest attempt's decline data from an invoice retrieved with FAILURE_EXPAND
    (or FAILURE_EXPAND_BEFORE_PAYMENTS). Each field from the charge when it has it, else from
    the intent's last_payment_error; the decline code from the error's `decline_code`, else
    the charge's `outcome.reason`, else the error code (as PaymentResult does)."""
    charge, intent = _latest_attempt(invoice)
    ids = {"charge_id": charge.get("id") or "", "payment_intent_id": intent.get("id") or ""}
    error = intent.get("last_payment_error") or {}
    if (
        invoice.get("status") == "paid"
        or charge.get("status") == "succeeded"
        or intent.get("status") == "succeeded"
    ):
        return FailureLookup(
            found=False, outcome="succeeded", message="latest payment succeeded", **ids
        )
    if charge.get("status") != "failed" and not error:
        return FailureLookup(found=False, message="no failed payment on the invoice", **ids)
    outcome = charge.get("outcome") or {}
    card = (charge.get("payment_method_details") or {}).get("card") or {}
    error_method = error.get("payment_method") or {}
    error_card = (error_method.get("card") or {}) if isinstance(error_method, dict) else {}
    failure_code = charge.get("failure_code") or error.get("code") or ""
    decline_code = normalised_decline_code(
        error.get("decline_code") or outcome.get("reason"), failure_code
    )
    created = charge.get("created")
    return FailureLookup(
        found=bool(decline_code or failure_code),
        outcome="failed",
        message=safe_text(charge.get("failure_message") or error.get("message")),
        decline_code=decline_code,
        failure_code=failure_code,
        advice_code=outcome.get("advice_code") or error.get("advice_code") or "",
        network_advice_code=(
            outcome.get("network_advice_code") or error.get("network_advice_code") or ""
        ),
        network_decline_code=(
            outcome.get("network_decline_code") or error.get("network_decline_code") or ""
        ),
        card_brand=(card.get("brand") or error_card.get("brand") or "").lower(),
        payment_method=(object_id(charge.get("payment_method")) or object_id(error_method) or ""),
        attempted_at=datetime.fromtimestamp(created, UTC) if created else None,
        **ids,
    )
