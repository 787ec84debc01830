"""A deterministic payment gateway for the embedded demo, the simulator and tests."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace

from billing_events.gateway.results import (
    ERROR,
    SUCCEEDED,
    FailureLookup,
    InvoiceResult,
    PaymentResult,
    SubscriptionResult,
    failed,
    log_failure_lookup,
    log_payment,
    succeeded,
)

Decider = Callable[[str, int], PaymentResult]


class SimulatedGateway:
    """A deterministic PaymentGateway for the embedded demo and the simulator.

    Each new idempotency key for an invoice is one attempt (numbered from 1). Its result is
    the next scripted result for that invoice if any is left, else `decide(invoice_id,
    attempt)` when given, else `default`. Like Stripe, a repeated key replays its first
    answer, and an invoice once paid answers succeeded to every later attempt. Ids are made
    up deterministically (`ch_sim_<invoice>_<attempt>`). Subscription calls always succeed
    and are recorded in `calls`, as are payments, voids and failure lookups. A voided invoice
    refuses payment; a paid one refuses the void. `latest_failure` answers what
    `script_failure` set for the invoice, else not found.
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
            self._failures: dict[str, FailureLookup] = {}
            self.voided: set[str] = set()
            self.subscription_status: dict[str, str] = {}
            self.subscription_items: dict[str, list[dict]] = {}
            self.calls: list[tuple[str, str, str]] = []

    def script(self, invoice_id: str, results: Iterable[PaymentResult]) -> None:
        """Queue results for the next attempts on this invoice (after any already queued)."""
        with self._lock:
            self._scripts[invoice_id].extend(results)

    def script_failure(self, invoice_id: str, lookup: FailureLookup) -> None:
        """What `latest_failure` answers for this invoice from now on."""
        with self._lock:
            self._failures[invoice_id] = lookup

    def attempts(self, invoice_id: str) -> int:
        return self._attempts[invoice_id]

    def pay_invoice(self, *, invoice_id: str, idempotency_key: str) -> PaymentResult:
        with self._lock:
            self.calls.append(("pay_invoice", invoice_id, idempotency_key))
            if (invoice_id, idempotency_key) in self._answers:
                return self._answers[(invoice_id, idempotency_key)]
            if invoice_id in self._paid:
                return succeeded(message="invoice was already paid")
            if invoice_id in self.voided:
                return replace(
                    failed(retryable=False, message="invoice is void"), invoice_status="void"
                )
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
        log_payment(invoice_id, idempotency_key, result)
        return result

    def cancel_subscription(
        self, *, subscription_id: str, idempotency_key: str
    ) -> SubscriptionResult:
        with self._lock:
            self.calls.append(("cancel_subscription", subscription_id, idempotency_key))
            self.subscription_status[subscription_id] = "canceled"
        return SubscriptionResult(ok=True, status="canceled")

    def revert_subscription(
        self, *, subscription_id: str, items: list[dict], idempotency_key: str
    ) -> SubscriptionResult:
        with self._lock:
            self.calls.append(("revert_subscription", subscription_id, idempotency_key))
            self.subscription_items[subscription_id] = [dict(item) for item in items]
            status = self.subscription_status.setdefault(subscription_id, "active")
        return SubscriptionResult(ok=True, status=status)

    def void_invoice(self, *, invoice_id: str, idempotency_key: str) -> InvoiceResult:
        with self._lock:
            self.calls.append(("void_invoice", invoice_id, idempotency_key))
            if invoice_id in self._paid:
                return InvoiceResult(ok=False, status="paid", message="invoice is paid: not voided")
            self.voided.add(invoice_id)
        return InvoiceResult(ok=True, status="void")

    def latest_failure(self, *, invoice_id: str) -> FailureLookup:
        with self._lock:
            self.calls.append(("latest_failure", invoice_id, ""))
            result = self._failures.get(invoice_id) or FailureLookup(
                found=False, message="no failure scripted"
            )
        log_failure_lookup(invoice_id, result)
        return result


SIMULATED = SimulatedGateway()
"""The process-wide simulated gateway: the demo and simulator script it, workers use it."""
