"""The Stripe implementation of the payment gateway, on the official SDK."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import stripe

from billing_events.gateway.results import (
    AUTHENTICATION_CODES,
    DECLINED,
    ERROR,
    PaymentResult,
    SubscriptionResult,
    log_payment,
    log_subscription,
    safe_text,
    succeeded,
)


def _error_body(error: stripe.StripeError) -> dict[str, Any]:
    body = error.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return {}


def _field(obj: stripe.StripeObject, name: str) -> Any:
    return obj.to_dict(recursive=False).get(name)


def _object_id(value: Any) -> str | None:
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


def _is_retryable(error: stripe.StripeError) -> bool:
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    if _should_retry_header(error) == "true":
        return True
    status = error.http_status
    if status is None or status in (409, 429) or status >= 500:
        return True
    # An unreadable answer with a 2xx code: we cannot tell what happened.
    return isinstance(error, stripe.APIError) and status < 400


def _transport_message(error: stripe.StripeError) -> str:
    if isinstance(error, stripe.APIConnectionError):
        cause = error.__cause__
        kind = type(cause).__name__ if cause is not None else "connection error"
        return f"could not reach Stripe ({kind})"
    stripe_message = safe_text(_error_body(error).get("message"))
    text = f"Stripe answered HTTP {error.http_status} ({type(error).__name__})"
    return f"{text}: {stripe_message}" if stripe_message else text


def _error_result(error: stripe.StripeError) -> PaymentResult:
    retryable = _is_retryable(error)
    replays = (
        retryable and (error.http_status or 0) >= 500 and _should_retry_header(error) == "false"
    )
    return PaymentResult(
        outcome=ERROR,
        retryable_error=retryable,
        new_key_needed=replays,
        failure_code=_error_body(error).get("code"),
        message=_transport_message(error),
    )


def _declined_result(error: stripe.CardError) -> PaymentResult:
    body = _error_body(error)
    code = body.get("code") or error.code
    decline_code = body.get("decline_code")
    if not decline_code:
        if code in AUTHENTICATION_CODES:
            decline_code = "authentication_required"
        elif code and code != "card_declined":
            decline_code = code
    payment_intent = body.get("payment_intent")
    charge_id = _object_id(body.get("charge"))
    if charge_id is None and isinstance(payment_intent, dict):
        charge_id = _object_id(payment_intent.get("latest_charge"))
    return PaymentResult(
        outcome=DECLINED,
        charge_id=charge_id,
        payment_intent_id=_object_id(payment_intent),
        decline_code=decline_code,
        failure_code=code,
        advice_code=body.get("advice_code"),
        network_advice_code=body.get("network_advice_code"),
        network_decline_code=body.get("network_decline_code"),
        message=safe_text(body.get("message")) or "card declined",
    )


def _paid_result(invoice: dict[str, Any]) -> PaymentResult:
    """A successful pay returns the invoice; its payments say which charge paid it."""
    charge_id = _object_id(invoice.get("charge"))  # API versions before 2025-03-31
    payment_intent_id = _object_id(invoice.get("payment_intent"))
    payments = invoice.get("payments") or {}
    for invoice_payment in payments.get("data") or []:
        if invoice_payment.get("status") not in (None, "paid"):
            continue
        payment = invoice_payment.get("payment") or {}
        charge_id = charge_id or _object_id(payment.get("charge"))
        intent = payment.get("payment_intent")
        payment_intent_id = payment_intent_id or _object_id(intent)
        if isinstance(intent, dict):
            charge_id = charge_id or _object_id(intent.get("latest_charge"))
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


class StripeGateway:
    """PaymentGateway on Stripe's API through the official SDK.

    `api_base` is the API's base URL (settings.STRIPE_API_BASE; tests point it at a local
    fake). The SDK's own network retries are off and `timeout_seconds` bounds connect and
    read: a slow Stripe costs a worker at most that long, then comes back retryable.
    The API key is held by the SDK client only and never logged.
    """

    def __init__(self, api_key: str, api_base: str, timeout_seconds: float = 10) -> None:
        if not api_key:
            raise ValueError("StripeGateway needs an API key")
        self.api_base = api_base.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": self.api_base},
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
            max_network_retries=0,
        )

    def __repr__(self) -> str:
        return f"StripeGateway(api_base={self.api_base!r}, timeout={self.timeout_seconds})"

    def pay_invoice(self, *, invoice_id: str, idempotency_key: str) -> PaymentResult:
        try:
            invoice = self._client.v1.invoices.pay(
                invoice_id,
                params={"off_session": True, "expand": ["payments"]},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as error:
            result = _declined_result(error)
        except stripe.InvalidRequestError as error:
            result = self._refused(invoice_id, error)
        except stripe.StripeError as error:
            result = _error_result(error)
        else:
            result = _paid_result(invoice.to_dict())
        log_payment(invoice_id, idempotency_key, result)
        return result

    def _refused(self, invoice_id: str, error: stripe.InvalidRequestError) -> PaymentResult:
        """Stripe refused the request (400/404). Already paid is success; else say why."""
        result = _error_result(error)
        try:
            status = _field(self._client.v1.invoices.retrieve(invoice_id), "status")
        except stripe.StripeError:
            return result
        if status == "paid":
            return succeeded(message="invoice was already paid")
        return replace(result, invoice_status=status)

    def cancel_subscription(
        self, *, subscription_id: str, idempotency_key: str
    ) -> SubscriptionResult:
        try:
            subscription = self._client.v1.subscriptions.cancel(
                subscription_id, options={"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as error:
            result = self._subscription_refused(subscription_id, error, wanted="canceled")
        except stripe.StripeError as error:
            result = _subscription_error(error)
        else:
            result = SubscriptionResult(ok=True, status=_field(subscription, "status"))
        log_subscription("cancel_subscription", subscription_id, result)
        return result

    def remove_subscription_items(
        self, *, subscription_id: str, price_ids: list[str], idempotency_key: str
    ) -> SubscriptionResult:
        """Delete the items on `price_ids`; items already gone count as removed."""
        wanted = set(price_ids)
        try:
            # A subscription has at most 20 items: one page holds them all.
            items = self._client.v1.subscription_items.list(
                params={"subscription": subscription_id, "limit": 100}
            )
            item_ids = [
                item.id for item in items.data if _object_id(item.to_dict().get("price")) in wanted
            ]
            if not item_ids:
                subscription = self._client.v1.subscriptions.retrieve(subscription_id)
                result = SubscriptionResult(
                    ok=True, status=_field(subscription, "status"), message="no items to remove"
                )
            else:
                subscription = self._client.v1.subscriptions.update(
                    subscription_id,
                    params={
                        "items": [{"id": item_id, "deleted": True} for item_id in item_ids],
                        "proration_behavior": "none",
                    },
                    options={"idempotency_key": idempotency_key},
                )
                result = SubscriptionResult(ok=True, status=_field(subscription, "status"))
        except stripe.StripeError as error:
            result = _subscription_error(error)
        log_subscription("remove_subscription_items", subscription_id, result)
        return result

    def _subscription_refused(
        self, subscription_id: str, error: stripe.InvalidRequestError, *, wanted: str
    ) -> SubscriptionResult:
        result = _subscription_error(error)
        try:
            status = _field(self._client.v1.subscriptions.retrieve(subscription_id), "status")
        except stripe.StripeError:
            return result
        if status == wanted:
            return SubscriptionResult(ok=True, status=status, message=f"already {wanted}")
        return replace(result, status=status)


def _subscription_error(error: stripe.StripeError) -> SubscriptionResult:
    return SubscriptionResult(
        ok=False, retryable_error=_is_retryable(error), message=_transport_message(error)
    )
