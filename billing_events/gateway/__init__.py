"""The payment gateway: the only code that asks Stripe to move money or change a subscription.

`PaymentGateway` is the interface the retry loop and the consequences use. Two implementations:

- `StripeGateway` calls Stripe through the official SDK (`stripe.StripeClient`), honouring
  `STRIPE_API_BASE`, with no SDK-level network retries: a failed call comes back at once as a
  result, and the retry loop decides when to try again.
- `SimulatedGateway` answers deterministically from scripts, for the embedded demo and the
  simulator.

Every call returns a plain result (`PaymentResult`, `SubscriptionResult`, `InvoiceResult`,
`FailureLookup`) instead of raising, so a caller never has to know Stripe's exception classes.

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

from functools import lru_cache

from billing_events.gateway.results import (
    AUTHENTICATION_CODES,
    DECLINED,
    ERROR,
    SUCCEEDED,
    FailureLookup,
    InvoiceResult,
    Outcome,
    PaymentGateway,
    PaymentResult,
    SubscriptionResult,
    declined,
    failed,
    failure_lookup_as_dict,
    safe_text,
    succeeded,
)
from billing_events.gateway.simulated import SIMULATED, SimulatedGateway
from billing_events.gateway.stripe_api import StripeGateway

__all__ = [
    "AUTHENTICATION_CODES",
    "DECLINED",
    "ERROR",
    "SIMULATED",
    "SUCCEEDED",
    "FailureLookup",
    "InvoiceResult",
    "Outcome",
    "PaymentGateway",
    "PaymentResult",
    "SimulatedGateway",
    "StripeGateway",
    "SubscriptionResult",
    "declined",
    "failed",
    "failure_lookup_as_dict",
    "gateway_from_settings",
    "safe_text",
    "succeeded",
]


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
