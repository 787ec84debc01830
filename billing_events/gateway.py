"""The payment gateway: the only code that asks Stripe to move money or change a subscription.

`PaymentGateway` is the interface the retry loop and the consequences use. Two implementations:

- `StripeGateway` calls Stripe through the official SDK (`stripe.StripeClient`), honouring
  `STRIPE_API_BASE`, with no SDK-level network retries: a failed call comes back at once as a
  result, and the retry loop decides when to try again.
- `SimulatedGateway` answers deterministically from scripts, for the embedded demo and the
  simulator.

Every call returns a plain result (`PaymentResult`, `SubscriptionResult`) instead of raising,
so a caller never has to know Stripe's exception classes.

Idempotency: the caller passes one key per *attempt*. A result with `retryable_error=True`
(connection failure, timeout, 429, 409, 5xx) means the attempt's outcome is unknown or
transient: retry it later with the same key, so that an attempt Stripe did carry out is
answered from Stripe's idempotency store instead of charging twice. Exception: when
`new_key_needed` is set (a 5xx Stripe asked not to retry), Stripe has stored that error under
the key and will replay it for 24 hours, so the next attempt needs a new key. A new key is
safe for invoices: Stripe refuses to pay an invoice that is already paid, and
`StripeGateway.pay_invoice` reports that refusal as `succeeded` with `invoice_status="paid"`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal, Protocol, runtime_checkable

import stripe

logger = logging.getLogger(__name__)

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
        _log_payment(invoice_id, idempotency_key, result)
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
        _log_subscription("cancel_subscription", subscription_id, result)
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
        _log_subscription("remove_subscription_items", subscription_id, result)
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


def _log_payment(invoice_id: str, idempotency_key: str, result: PaymentResult) -> None:
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


def _log_subscription(action: str, subscription_id: str, result: SubscriptionResult) -> None:
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


# --- Simulation ---------------------------------------------------------------------------

Decider = Callable[[str, int], PaymentResult]


class SimulatedGateway:
    """A deterministic PaymentGateway for the embedded demo and the simulator.

    Each new idempotency key for an invoice is one attempt (numbered from 1). Its result is
    the next scripted result for that invoice if any is left, else `decide(invoice_id,
    attempt)` when given, else `default`. Like Stripe, a repeated key replays its first
    answer, and an invoice once paid answers succeeded to every later attempt. Ids are made
    up deterministically (`ch_sim_<invoice>_<attempt>`). Subscription calls always succeed
    and are recorded in `calls`, as are payments.
    """

    def __init__(
        self, *, default: PaymentResult | None = None, decide: Decider | None = None
    ) -> None:
        self.default = default or succeeded()
        self.decide = decide
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._scripts: dict[str, list[PaymentResult]] = defaultdict(list)
            self._attempts: dict[str, int] = defaultdict(int)
            self._answers: dict[tuple[str, str], PaymentResult] = {}
            self._paid: set[str] = set()
            self.subscription_status: dict[str, str] = {}
            self.calls: list[tuple[str, str, str]] = []

    def script(self, invoice_id: str, results: Iterable[PaymentResult]) -> None:
        """Queue results for the next attempts on this invoice (after any already queued)."""
        with self._lock:
            self._scripts[invoice_id].extend(results)

    def attempts(self, invoice_id: str) -> int:
        return self._attempts[invoice_id]

    def pay_invoice(self, *, invoice_id: str, idempotency_key: str) -> PaymentResult:
        with self._lock:
            self.calls.append(("pay_invoice", invoice_id, idempotency_key))
            if (invoice_id, idempotency_key) in self._answers:
                return self._answers[(invoice_id, idempotency_key)]
            if invoice_id in self._paid:
                return succeeded(message="invoice was already paid")
            self._attempts[invoice_id] += 1
            attempt = self._attempts[invoice_id]
            if self._scripts[invoice_id]:
                result = self._scripts[invoice_id].pop(0)
            elif self.decide is not None:
                result = self.decide(invoice_id, attempt)
            else:
                result = self.default
            if result.outcome != ERROR:
                result = replace(
                    result,
                    charge_id=result.charge_id or f"ch_sim_{invoice_id}_{attempt}",
                    payment_intent_id=result.payment_intent_id or f"pi_sim_{invoice_id}",
                )
            if result.outcome == SUCCEEDED:
                self._paid.add(invoice_id)
            self._answers[(invoice_id, idempotency_key)] = result
        _log_payment(invoice_id, idempotency_key, result)
        return result

    def cancel_subscription(
        self, *, subscription_id: str, idempotency_key: str
    ) -> SubscriptionResult:
        with self._lock:
            self.calls.append(("cancel_subscription", subscription_id, idempotency_key))
            self.subscription_status[subscription_id] = "canceled"
        return SubscriptionResult(ok=True, status="canceled")

    def remove_subscription_items(
        self, *, subscription_id: str, price_ids: list[str], idempotency_key: str
    ) -> SubscriptionResult:
        with self._lock:
            self.calls.append(("remove_subscription_items", subscription_id, idempotency_key))
            status = self.subscription_status.setdefault(subscription_id, "active")
        return SubscriptionResult(ok=True, status=status)


SIMULATED = SimulatedGateway()
"""The process-wide simulated gateway: the demo and simulator script it, workers use it."""


@lru_cache(maxsize=4)
def _stripe_gateway(api_key: str, api_base: str, timeout_seconds: float) -> StripeGateway:
    return StripeGateway(api_key, api_base, timeout_seconds)


def gateway_from_settings() -> PaymentGateway:
    """The gateway this process should use.

    With settings.STRIPE_API_KEY set: a StripeGateway on settings.STRIPE_API_BASE
    (default https://api.stripe.com) with settings.STRIPE_API_TIMEOUT_SECONDS (default 10),
    one per configuration, reused. Without a key (the embedded demo, tests): the
    process-wide `SIMULATED` gateway, so scripts set by the demo or simulator are the ones
    the worker code sees.
    """
    from django.conf import settings

    api_key = getattr(settings, "STRIPE_API_KEY", "")
    if not api_key:
        return SIMULATED
    return _stripe_gateway(
        api_key,
        getattr(settings, "STRIPE_API_BASE", "") or "https://api.stripe.com",
        settings.STRIPE_API_TIMEOUT_SECONDS,
    )
