"""The Stripe implementation of the payment gateway, on the official SDK."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote

import requests
import stripe

from billing_events.gateway.http_client import KeptConnectionClient
from billing_events.gateway.results import (
    FailureLookup,
    InvoiceResult,
    PaymentResult,
    SubscriptionResult,
    log_failure_lookup,
    log_invoice,
    log_payment,
    log_subscription,
    succeeded,
)
from billing_events.gateway.stripe_answers import (
    FAILURE_EXPAND,
    FAILURE_EXPAND_BEFORE_PAYMENTS,
    INVOICE_PAYMENTS_SINCE,
    declined_result,
    error_result,
    failure_from_invoice,
    invoice_error,
    is_missing,
    is_retryable,
    object_field,
    paid_result,
    subscription_error,
    subscription_item_changes,
    transport_message,
    wanted_items,
)


def _session() -> requests.Session:
    """requests reads the environment's proxy settings on every request (a walk over
    os.environ, about a millisecond a charge); here they are read once (`_proxy`). The
    SDK sets its own CA bundle and authorization, the other things trust_env would read."""
    session = requests.Session()
    session.trust_env = False
    return session


def _proxy(api_base: str) -> dict[str, str] | None:
    """HTTPS_PROXY / HTTP_PROXY as they apply to Stripe's address (NO_PROXY honoured)."""
    return requests.utils.get_environ_proxies(api_base) or None


class StripeGateway:
    """PaymentGateway on Stripe's API through the official SDK.

    `api_base` is the API's base URL (settings.STRIPE_API_BASE; tests point it at a local
    fake). The SDK's own network retries are off and `timeout_seconds` bounds connect and
    read: a slow Stripe costs a worker at most that long, then comes back retryable.
    The API key is held by the SDK client only and never logged.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str,
        timeout_seconds: float = 10,
        *,
        api_version: str | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("StripeGateway needs an API key")
        self.api_base = api_base.rstrip("/")
        self.timeout_seconds = timeout_seconds
        # None: the version this SDK release is pinned to (sent as Stripe-Version).
        self.api_version = api_version or stripe.api_version
        proxy = _proxy(self.api_base)
        if proxy:  # requests speaks to proxies; the kept connection does not
            http_client = stripe.RequestsClient(
                timeout=timeout_seconds, session=_session(), proxy=proxy
            )
        else:
            http_client = KeptConnectionClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            api_key,
            stripe_version=self.api_version,
            base_addresses={"api": self.api_base},
            http_client=http_client,
            max_network_retries=0,
        )

    def __repr__(self) -> str:
        return f"StripeGateway(api_base={self.api_base!r}, timeout={self.timeout_seconds})"

    def pay_invoice(self, *, invoice_id: str, idempotency_key: str) -> PaymentResult:
        try:
            # The SDK's raw request: the same requestor, errors and retries as
            # `v1.invoices.pay`, without building a StripeObject tree of the whole invoice
            # (half the client's CPU for a charge) only to turn it back into a dict.
            response = self._client.raw_request(
                "post",
                f"/v1/invoices/{quote(invoice_id, safe='')}/pay",
                off_session=True,
                expand=["payments"],
                idempotency_key=idempotency_key,
            )
        except stripe.CardError as error:
            result = declined_result(error)
        except stripe.InvalidRequestError as error:
            result = self._refused(invoice_id, error)
        except stripe.StripeError as error:
            result = error_result(error)
        else:
            result = paid_result(response.data)
        log_payment(invoice_id, idempotency_key, result)
        return result

    def _refused(self, invoice_id: str, error: stripe.InvalidRequestError) -> PaymentResult:
        """Stripe refused the request (400/404). Already paid is success; else say why."""
        result = error_result(error)
        try:
            status = object_field(self._client.v1.invoices.retrieve(invoice_id), "status")
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
            result = self._cancel_refused(subscription_id, error)
        except stripe.StripeError as error:
            result = subscription_error(error)
        else:
            result = SubscriptionResult(ok=True, status=object_field(subscription, "status"))
        log_subscription("cancel_subscription", subscription_id, result)
        return result

    def _cancel_refused(
        self, subscription_id: str, error: stripe.InvalidRequestError
    ) -> SubscriptionResult:
        """Stripe refused the cancel (already cancelled, or no such subscription): look."""
        result = subscription_error(error)
        try:
            status = object_field(self._client.v1.subscriptions.retrieve(subscription_id), "status")
        except stripe.StripeError as lookup_error:
            if is_missing(lookup_error):
                # Deleted, or never known to this account: asking again would never end.
                return SubscriptionResult(
                    ok=True,
                    status="canceled",
                    message="no such subscription at Stripe: recorded as cancelled",
                )
            return subscription_error(lookup_error) if is_retryable(lookup_error) else result
        if status in ("canceled", "incomplete_expired"):
            return SubscriptionResult(ok=True, status=status, message=f"already {status}")
        return replace(result, status=status)

    def revert_subscription(
        self, *, subscription_id: str, items: list[dict], idempotency_key: str
    ) -> SubscriptionResult:
        """Put the subscription back to exactly `items`, in one update without proration."""
        wanted = wanted_items(items)
        if wanted is None:
            result = SubscriptionResult(ok=False, message="each price may appear only once")
            log_subscription("revert_subscription", subscription_id, result)
            return result
        try:
            # A subscription has at most 20 items: one page holds them all.
            current = self._client.v1.subscription_items.list(
                params={"subscription": subscription_id, "limit": 100}
            )
            changes = subscription_item_changes([item.to_dict() for item in current.data], wanted)
            if not changes:
                subscription = self._client.v1.subscriptions.retrieve(subscription_id)
                result = SubscriptionResult(
                    ok=True,
                    status=object_field(subscription, "status"),
                    message="items already as wanted",
                )
            else:
                subscription = self._client.v1.subscriptions.update(
                    subscription_id,
                    params={"items": changes, "proration_behavior": "none"},
                    options={"idempotency_key": idempotency_key},
                )
                result = SubscriptionResult(ok=True, status=object_field(subscription, "status"))
        except stripe.StripeError as error:
            result = subscription_error(error)
        log_subscription("revert_subscription", subscription_id, result)
        return result

    # --- invoices ------------------------------------------------------------------------

    def void_invoice(self, *, invoice_id: str, idempotency_key: str) -> InvoiceResult:
        try:
            invoice = self._client.v1.invoices.void_invoice(
                invoice_id, options={"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as error:
            result = self._void_refused(invoice_id, error)
        except stripe.StripeError as error:
            result = invoice_error(error)
        else:
            result = InvoiceResult(ok=True, status=object_field(invoice, "status") or "void")
        log_invoice("void_invoice", invoice_id, result)
        return result

    def _void_refused(self, invoice_id: str, error: stripe.InvalidRequestError) -> InvoiceResult:
        """Stripe refused the void: already void is done; paid means the customer paid."""
        result = invoice_error(error)
        try:
            status = object_field(self._client.v1.invoices.retrieve(invoice_id), "status")
        except stripe.StripeError as lookup_error:
            return invoice_error(lookup_error) if is_retryable(lookup_error) else result
        if status == "void":
            return InvoiceResult(ok=True, status=status, message="already void")
        if status == "paid":
            return InvoiceResult(ok=False, status=status, message="invoice is paid: not voided")
        return replace(result, status=status or "")

    def latest_failure(self, *, invoice_id: str) -> FailureLookup:
        expand = (
            FAILURE_EXPAND
            if self.api_version >= INVOICE_PAYMENTS_SINCE
            else FAILURE_EXPAND_BEFORE_PAYMENTS
        )
        try:
            invoice = self._client.v1.invoices.retrieve(invoice_id, params={"expand": expand})
        except stripe.StripeError as error:
            result = FailureLookup(
                found=False,
                retryable_error=is_retryable(error),
                message=transport_message(error),
            )
        else:
            result = failure_from_invoice(invoice.to_dict())
        log_failure_lookup(invoice_id, result)
        return result
