"""Stripe's side of a run: the events it sends (built from Stripe's own example objects,
delivered soon, sometimes late, sometimes twice), what its API knows of a failed first
attempt, and its answers to the service's retries, cancellations and reverts, with the
webhooks that follow them.

The hard cases (see `generator`): a first attempt's charge events can come hours after
its invoice.payment_failed, or never; either way Stripe's API knows the decline, so every
failed first attempt is also scripted into the gateway's failure lookup
(`SIMULATED.script_failure`, where the gateway has it). An old invoice's failure events
are first delivered when it is 20-60 days old. At each retry the gateway's `decide` also
notes whether the service had, at that moment, a decline code recorded for the invoice's
latest failure (`ServiceRun.charged_class_unknown`).
"""

import heapq
import itertools
import random
from collections import Counter
from dataclasses import fields

from django.db.models import Q

from billing_events import samples
from billing_events.gateway import SIMULATED, PaymentResult, declined, failed, succeeded
from billing_events.models import PaymentAttempt
from core import clock
from dunning.models import OutboxItem
from simulation.book import AccountTruth, Book, Charge, Spell
from simulation.ledger import InvoiceState
from simulation.service_run import START, ServiceRun, _ts, at, index_of

try:  # the gateway's failure lookup is being added alongside: run without it until then
    from billing_events.gateway import FailureLookup  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the gateway's version
    FailureLookup = None


class StripeSide:
    def __init__(self, book: Book) -> None:
        self.book = book
        self.mix = book.mix
        self.run = ServiceRun(book)
        self.ledger = self.run.ledger
        # Delivery noise (delays, duplicates, order) and event ids are drawn per account,
        # never from one stream for the book: an account's deliveries then do not depend
        # on which other accounts share the run, so a shard of the book (`--workers`) sees
        # exactly what the whole book's run sees for it.
        self._noise = random.Random()
        self.noise_draws: Counter = Counter()
        self.event_ids: Counter = Counter()
        self.queue: list[tuple[float, int, int, dict]] = []  # (due, order, account, event)
        self.order = itertools.count()
        self.echoes: list[tuple[float, int, str, int, Spell | None]] = []
        self.cancelled: dict[int, float] = {}
        # Cancellations and reverts: the highest id looked at, and those still pending.
        self.outbox_seen = 0
        self.outbox_waiting: set[int] = set()
        # Whether the service ran (an event posted, due work run) since the last look at
        # the outbox: only its work completes items, so with none there is nothing to read.
        self.service_ran = True
        # invoice -> time of its failed first attempt, while that is its latest failure
        # (a retry's decline comes back with its code in the gateway's answer).
        self.unanswered_failure: dict[str, float] = {}

    # --- Stripe's events ------------------------------------------------------------

    def noise(self, account: int) -> random.Random:
        """The account's own stream of delivery noise, its n-th draw seeded by (the book's
        delivery seed, account, n): one reseeded generator, not one per account (100,000
        generators would hold 250 MB)."""
        self.noise_draws[account] += 1
        n = self.noise_draws[account]
        self._noise.seed((self.book.delivery_seed * 1_000_003 + account) * 1_000_003 + n)
        return self._noise

    def event(
        self, account: int, type: str, obj: dict, t: float, previous: dict | None = None
    ) -> dict:
        self.run.events_created += 1
        self.event_ids[account] += 1
        return samples.event(
            type,
            obj,
            created=_ts(t),
            id=f"evt_sim{account:06d}n{self.event_ids[account]:05d}",
            previous_attributes=previous,
        )

    def send(self, account: int, event: dict, t: float) -> None:
        """Stripe delivers it soon, sometimes late (after later events), sometimes twice."""
        rng = self.noise(account)
        delay = rng.uniform(1, 30)
        if rng.random() < self.mix.delayed_rate:
            delay = rng.triangular(60, 3 * 3600, 600)
            self.run.delayed += 1
        heapq.heappush(self.queue, (t + delay, next(self.order), account, event))
        if rng.random() < self.mix.duplicate_rate:
            again = t + delay + rng.uniform(5, 6 * 3600)
            heapq.heappush(self.queue, (again, next(self.order), account, event))

    def invoice_event(
        self, type: str, truth: AccountTruth, state: InvoiceState, t: float, **fields
    ) -> None:
        charge = state.charge
        obj = samples.invoice(
            id=charge.invoice_id,
            customer=truth.customer,
            created=_ts(charge.at),
            amount_due=charge.amount,
            billing_reason=charge.billing_reason,
            attempt_count=state.attempts,
            subscription=truth.subscription,
            status_at=_ts(t),
            **fields,
        )
        self.send(truth.index, self.event(truth.index, type, obj, t), t)

    def charge_event(
        self,
        truth: AccountTruth,
        state: InvoiceState,
        t: float,
        charge_id: str,
        spell: Spell | None,
        *,
        attempted: float | None = None,
        delay: float = 0.0,
        with_intent: bool = False,
    ) -> None:
        """The charge's event (and the payment intent's, when asked), created at t for a
        charge attempted at `attempted` (default t), on their way `delay` seconds late."""
        attempted = t if attempted is None else attempted
        intent_id = f"pi_{state.charge.invoice_id.removeprefix('in_')}" if with_intent else None
        obj = samples.charge(
            id=charge_id,
            customer=truth.customer,
            created=_ts(attempted),
            invoice=state.charge.invoice_id,
            status="failed" if spell else "succeeded",
            amount=state.charge.amount,
            decline_code=spell.trouble.code if spell else None,
            payment_method=self.payment_method(truth.index),
            payment_intent=intent_id,
        )
        kind = "charge.failed" if spell else "charge.succeeded"
        self.send(truth.index, self.event(truth.index, kind, obj, t), t + delay)
        if intent_id and spell is not None:
            intent = samples.payment_intent_failed(
                id=intent_id,
                customer=truth.customer,
                created=_ts(attempted),
                charge=charge_id,
                invoice=state.charge.invoice_id,
                amount=state.charge.amount,
                decline_code=spell.trouble.code,
            )
            intent["payment_method"] = self.payment_method(truth.index)
            event = self.event(truth.index, "payment_intent.payment_failed", intent, t)
            self.send(truth.index, event, t + delay)

    def script_failure_lookup(
        self, truth: AccountTruth, state: InvoiceState, charge_id: str, spell: Spell
    ) -> None:
        """What Stripe's API answers about the invoice's failed first attempt, whatever
        became of its webhooks."""
        script = getattr(SIMULATED, "script_failure", None)
        if script is None or FailureLookup is None:
            return
        values = {
            "found": True,
            "retryable_error": False,
            "message": "",
            "outcome": "failed",
            "decline_code": spell.trouble.code,
            "failure_code": "card_declined",
            "advice_code": "",
            "network_advice_code": "",
            "network_decline_code": "",
            "card_brand": "visa",
            "payment_method": self.payment_method(truth.index),
            "charge_id": charge_id,
            "payment_intent_id": f"pi_{state.charge.invoice_id.removeprefix('in_')}",
            "attempted_at": at(int(state.charge.at)),
        }
        known = {f.name for f in fields(FailureLookup)}
        script(
            state.charge.invoice_id,
            FailureLookup(**{k: v for k, v in values.items() if k in known}),
        )
        self.run.failure_lookups_scripted += 1

    def subscription_event(self, type: str, truth: AccountTruth, t: float, status: str) -> None:
        obj = samples.subscription(
            id=truth.subscription, customer=truth.customer, created=_ts(t), status=status
        )
        self.send(truth.index, self.event(truth.index, type, obj, t), t)

    def upgraded(self, truth: AccountTruth, charge: Charge, t: float) -> None:
        """The subscription change Stripe reports with the upgrade, with the items it had
        before in `previous_attributes` (what a revert puts back)."""
        base, addon = "price_sim_base", f"price_sim_up_{charge.invoice_id.removeprefix('in_')}"
        obj = samples.subscription(
            id=truth.subscription,
            customer=truth.customer,
            created=_ts(t),
            status="active",
            items=[(base, 1), (addon, 1)],
        )
        previous = {"items": samples.subscription_items(truth.subscription, [(base, 1)])}
        event = self.event(truth.index, "customer.subscription.updated", obj, t, previous)
        self.send(truth.index, event, t)

    def payment_method(self, account: int) -> str:
        return f"pm_sim{account:06d}_{self.ledger.cards[account].generation}"

    # --- the gateway: Stripe answering the service's retries ----------------------------

    def decide(self, invoice_id: str, attempt: int) -> PaymentResult:
        t = (clock.now() - START).total_seconds()
        state = self.ledger.invoices.get(invoice_id)
        if state is None:
            return failed(retryable=False, message="no such invoice")
        if state.status == "paid":
            return succeeded(message="invoice was already paid")
        if state.status == "void":
            return failed(retryable=False, message="invoice is void")
        failed_at = self.unanswered_failure.pop(invoice_id, None)
        if failed_at is not None and not self.decline_code_recorded(invoice_id, failed_at):
            self.run.charged_class_unknown[state.failed_class or "none"] += 1
        spell = self.ledger.retry(state.account, invoice_id, t)
        self.echoes.append((t, state.account, invoice_id, attempt, spell))
        return declined(spell.trouble.code) if spell else succeeded()

    @staticmethod
    def decline_code_recorded(invoice_id: str, failed_at: float) -> bool:
        """Whether the service holds a decline code for the invoice's attempt at failed_at
        (or a later one): from the charge's events, or from whatever it learned itself."""
        return (
            PaymentAttempt.objects.filter(
                stripe_invoice_id=invoice_id,
                outcome=PaymentAttempt.Outcome.FAILED,
                # Stripe's timestamps are whole seconds (see _ts).
                attempted_at__gte=at(int(failed_at)),
            )
            .exclude(decline_code="")
            .exists()
        )

    def echo(self) -> None:
        """The webhooks Stripe sends after each retry, and after each cancellation."""
        echoes, self.echoes = self.echoes, []
        for t, account, invoice_id, attempt, spell in echoes:
            truth = self.book.accounts[account]
            state = self.ledger.invoices[invoice_id]
            self.charge_event(truth, state, t, f"ch_sim_{invoice_id}_{attempt}", spell)
            if spell is None:
                self.invoice_event("invoice.paid", truth, state, t, status="paid")
            else:
                self.invoice_event("invoice.payment_failed", truth, state, t)
        self.echo_outbox()

    def echo_outbox(self) -> None:
        """Stripe's side of the cancellations and reverted upgrades the service completed
        since the last look: the subscription deleted; the upgrade's invoice voided. One
        query a stop, on the id index: the items created since the last look, and those
        seen before still pending. Not an id high-water mark alone: an item deferred
        behind another completes after items created later, and which ids those are
        depends on the other accounts in the run (a shard would differ)."""
        if not self.service_ran:
            return
        self.service_ran = False
        kinds = [OutboxItem.Kind.CANCEL_SUBSCRIPTION, OutboxItem.Kind.REVERT_UPGRADE]
        rows = (
            OutboxItem.objects.filter(kind__in=kinds)
            .filter(Q(pk__gt=self.outbox_seen) | Q(pk__in=list(self.outbox_waiting)))
            .values_list(
                "pk", "kind", "status", "account__stripe_customer_id", "completed_at", "result"
            )
        )
        done = []
        for pk, kind, status, customer, completed_at, result in rows:
            self.outbox_seen = max(self.outbox_seen, pk)
            if status == OutboxItem.Status.PENDING:
                self.outbox_waiting.add(pk)
                continue
            self.outbox_waiting.discard(pk)
            if status == OutboxItem.Status.DONE:
                done.append((completed_at, pk, kind, customer, result))
        for completed_at, _, kind, customer, result in sorted(done):
            truth = self.book.accounts[index_of(customer)]
            t = (completed_at - START).total_seconds()
            if kind == OutboxItem.Kind.CANCEL_SUBSCRIPTION:
                self.cancelled.setdefault(truth.index, t)
                self.subscription_event("customer.subscription.deleted", truth, t, "canceled")
                continue
            for invoice_id in result.get("voided", []):
                state = self.ledger.invoices.get(invoice_id)
                if state is not None and state.status in ("open", "uncollectible"):
                    state.status, state.closed_at = "void", t
                    self.invoice_event("invoice.voided", truth, state, t, status="void")
