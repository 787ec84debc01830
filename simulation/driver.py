"""Run a book through the real service, on the project's test clock.

Every Stripe event is built from Stripe's own example objects (`billing_events.samples`),
signed with the webhook secret and posted to `/webhooks/stripe/` through Django's test
client: the real ingest, the real processing (in-process Celery, as on the embedded
default), the one handler, the outbox. The payment gateway is the shared `SIMULATED`
gateway, whose `decide` hook answers each retry from the book's hidden truth (a soft
decline clears on its day, a hard one only once the customer added a card, fraud and
authentication-required never off-session). Stripe's answer to a retry then comes back
as webhooks too, like Stripe sends them.

Time: the test clock starts at START and `dunning.test_clock.advance(to=...)` moves it,
running every review, retry and side effect that falls due on the way. The driver stops
at every hour in which something happens (a charge, a customer or finance action, a
delivery, a due retry or review, a day boundary) and delivers that hour's events then,
in a shuffled order, some late and some twice. Account Management is a real HTTP server
on loopback that answers 503 during the outage.

The hard cases (see `generator`): a first attempt's charge events can come hours after
its invoice.payment_failed, or never; either way Stripe's API knows the decline, so every
failed first attempt is also scripted into the gateway's failure lookup
(`SIMULATED.script_failure`, where the gateway has it). An old invoice's failure events
are first delivered when it is 20-60 days old. At each retry the gateway's `decide` also
notes whether the service had, at that moment, a decline code recorded for the invoice's
latest failure (`ServiceRun.charged_class_unknown`).

The run needs a database of its own (the command makes one): it adds accounts and moves
the shared test clock.
"""

import heapq
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from django.db.models import Min
from django.test import Client
from django.test.utils import override_settings

from billing_events import processing, samples
from billing_events.gateway import SIMULATED, PaymentResult, declined, failed, succeeded
from billing_events.models import Account, PaymentAttempt, WebhookEvent
from config.celery import app as celery_app
from dunning import clock, outbox, test_clock
from dunning.engine import handle
from dunning.models import OPEN_STATES, BadDebtEpisode, DunningCase, OutboxItem, TestClock
from dunning.triggers import Trigger, TriggerKind
from entitlements.models import Restriction
from simulation.account_management import AccountManagementStub
from simulation.book import DAY, LATE, ON_TIME, AccountTruth, Book, Charge, Spell
from simulation.generator import delivery_rng
from simulation.ledger import InvoiceState, Ledger

try:  # the gateway's failure lookup is being added alongside: run without it until then
    from billing_events.gateway import FailureLookup  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the gateway's version
    FailureLookup = None

START = datetime(2027, 1, 4, tzinfo=UTC)  # a Monday, 00:00 UTC: day 0 of every run
START_TS = int(START.timestamp())
STEP = 3600.0  # deliveries are batched per hour of simulated time
SECRET = "whsec_simulation_only"
LEVELS = ("notice", "upgrade_restricted", "premium_restricted", "read_only", "suspended")
QUIET_LOGGERS = ("billing_events", "dunning", "entitlements", "celery", "kombu")


class SimulationError(RuntimeError):
    """The run cannot start (e.g. the database is not empty)."""


@dataclass
class ServiceRun:
    """What the run saw besides the database: Stripe's side, deliveries, daily samples."""

    book: Book
    ledger: Ledger = field(default_factory=Ledger)
    events_created: int = 0
    deliveries: Counter = field(default_factory=Counter)  # HTTP status -> count
    duplicates_delivered: int = 0
    delayed: int = 0  # held back 1 min-3 h by Stripe, so delivered after later events
    levels: dict[str, list[int]] = field(default_factory=dict)
    cancelled_by_day: list[int] = field(default_factory=list)
    bad_debt_by_day: list[int] = field(default_factory=list)
    restricted_days: int = 0
    beyond_upgrade_days: int = 0
    no_core_days: int = 0
    core_days_lost: int = 0  # every account, not only those with a paying history
    cancelled: set[int] = field(default_factory=set)  # accounts whose subscription ended
    drift_changed: int = 0
    drift_accounts: int = 0
    account_management: dict[str, int] = field(default_factory=dict)
    am_standing: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    # The hard cases as met: "<on_time|late|missing>:<class>" -> failed first attempts.
    charge_events: Counter = field(default_factory=Counter)
    old_invoices_seen: int = 0
    failure_lookups_scripted: int = 0
    failure_lookup_available: bool = False
    # Retries made while the invoice's latest failure had no decline code recorded by the
    # service, by the class that failure had in truth.
    charged_class_unknown: Counter = field(default_factory=Counter)


def _ts(t: float) -> int:
    return START_TS + int(t)


def at(t: float) -> datetime:
    return START + timedelta(seconds=t)


def index_of(customer: str) -> int:
    return int(customer.removeprefix("cus_sim"))


class Driver:
    def __init__(self, book: Book, *, progress: Callable[[str], None] | None = None) -> None:
        self.book = book
        self.mix = book.mix
        self.run = ServiceRun(book)
        self.ledger = self.run.ledger
        self.rng = delivery_rng(book)
        self.progress = progress
        self.client = Client()
        self.happenings: list[tuple[float, int, str, object]] = []
        self.queue: list[tuple[float, int, dict]] = []
        self.order = itertools.count()
        self.event_ids = itertools.count(1)
        self.echoes: list[tuple[float, int, str, int, Spell | None]] = []
        self.cancelled: dict[int, float] = {}
        self.last_cancel_pk = 0
        self.last_revert_pk = 0
        self.now = 0.0
        self.am = AccountManagementStub()
        # invoice -> time of its failed first attempt, while that is its latest failure
        # (a retry's decline comes back with its code in the gateway's answer).
        self.unanswered_failure: dict[str, float] = {}

    # --- Stripe's events ------------------------------------------------------------

    def event(self, type: str, obj: dict, t: float, previous: dict | None = None) -> dict:
        self.run.events_created += 1
        return samples.event(
            type,
            obj,
            created=_ts(t),
            id=f"evt_sim{next(self.event_ids):010d}",
            previous_attributes=previous,
        )

    def send(self, event: dict, t: float) -> None:
        """Stripe delivers it soon, sometimes late (after later events), sometimes twice."""
        delay = self.rng.uniform(1, 30)
        if self.rng.random() < self.mix.delayed_rate:
            delay = self.rng.triangular(60, 3 * 3600, 600)
            self.run.delayed += 1
        heapq.heappush(self.queue, (t + delay, next(self.order), event))
        if self.rng.random() < self.mix.duplicate_rate:
            again = t + delay + self.rng.uniform(5, 6 * 3600)
            heapq.heappush(self.queue, (again, next(self.order), event))

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
        self.send(self.event(type, obj, t), t)

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
        self.send(self.event("charge.failed" if spell else "charge.succeeded", obj, t), t + delay)
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
            self.send(self.event("payment_intent.payment_failed", intent, t), t + delay)

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
        self.send(self.event(type, obj, t), t)

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
        self.send(self.event("customer.subscription.updated", obj, t, previous), t)

    def payment_method(self, account: int) -> str:
        return f"pm_sim{account:06d}_{self.ledger.cards[account].generation}"

    # --- the hidden truth, as it happens -----------------------------------------------

    def push(self, t: float, kind: str, payload: object) -> None:
        heapq.heappush(self.happenings, (t, next(self.order), kind, payload))

    def history(self, truth: AccountTruth) -> None:
        """Replay the paid history the engine reads (good payers get more time), before
        day 0, for the accounts whose story has a failure in it."""
        self.subscription_event("customer.subscription.created", truth, 0, "active")
        first = truth.charges[0].at if truth.charges else 0.0
        for month in range(truth.history, 0, -1):
            created = first - month * 30 * DAY
            obj = samples.invoice(
                id=f"in_sim{truth.index:06d}h{month:02d}",
                customer=truth.customer,
                created=_ts(created),
                status="paid",
                amount_due=truth.plan,
                attempt_count=1,
                subscription=truth.subscription,
                status_at=_ts(created),
            )
            event = self.event("invoice.paid", obj, created)
            heapq.heappush(self.queue, (0.0, next(self.order), event))

    def on_charge(self, t: float, truth: AccountTruth, charge: Charge) -> None:
        if truth.index in self.cancelled:
            return  # the service cancelled the subscription: Stripe bills it no more
        spell, new = self.ledger.first_charge(truth, charge, t)
        state = self.ledger.invoices[charge.invoice_id]
        charge_id = f"ch_{charge.invoice_id.removeprefix('in_')}_1"
        if spell is None:
            self.charge_event(truth, state, t, charge_id, None)
            self.invoice_event("invoice.paid", truth, state, t, status="paid")
            return
        if charge.old:
            # Stripe has it, the service will hear of it only then.
            self.push(charge.seen_at, "first_seen", (truth, charge, spell, new))
            return
        self.first_attempt_failed(t, truth, charge, spell, new)

    def first_attempt_failed(
        self, t: float, truth: AccountTruth, charge: Charge, spell: Spell, new: bool
    ) -> None:
        """Stripe's events about a failed first attempt, sent at t (its time, or when an old
        invoice is first seen), and what then happens to the invoice counted from t."""
        state = self.ledger.invoices[charge.invoice_id]
        charge_id = f"ch_{charge.invoice_id.removeprefix('in_')}_1"
        self.unanswered_failure[charge.invoice_id] = charge.at
        self.run.charge_events[f"{charge.charge_event}:{spell.trouble.kind}"] += 1
        if charge.charge_event == ON_TIME:
            self.charge_event(truth, state, t, charge_id, spell, attempted=charge.at)
        elif charge.charge_event == LATE:
            self.charge_event(
                truth, state, t, charge_id, spell, delay=charge.charge_event_delay, with_intent=True
            )
        self.script_failure_lookup(truth, state, charge_id, spell)
        if charge.kind == "upgrade":
            self.upgraded(truth, charge, t)
        self.invoice_event("invoice.payment_failed", truth, state, t)
        if charge.kind == "renewal":
            self.subscription_event("customer.subscription.updated", truth, t, "past_due")
        for after, action in charge.fate.actions():
            self.push(t + after, action, (truth, charge.invoice_id))
        if new and spell.end is not None and spell.trouble.kind != "soft":
            self.push(spell.end, "spell_end", (truth, spell))

    def on_first_seen(
        self, t: float, truth: AccountTruth, charge: Charge, spell: Spell, new: bool
    ) -> None:
        if not self.ledger.invoices[charge.invoice_id].owed:
            return
        self.run.old_invoices_seen += 1
        self.first_attempt_failed(t, truth, charge, spell, new)

    def on_spell_end(self, t: float, truth: AccountTruth, spell: Spell) -> None:
        card = self.ledger.cards[truth.index]
        card.spell_ended(spell)
        if spell.trouble.kind in ("hard", "fraud"):
            method = self.payment_method(truth.index)
            obj = samples.payment_method(id=method, customer=truth.customer, created=_ts(t))
            self.send(self.event("payment_method.attached", obj, t), t)
            obj = samples.customer(id=truth.customer, created=_ts(t), default_payment_method=method)
            previous = {"invoice_settings": {"default_payment_method": None}}
            self.send(self.event("customer.updated", obj, t, previous), t)
        if spell.trouble.kind in ("fraud", "auth"):
            # The customer comes back on-session and pays what is owed.
            for state in self.ledger.owed(truth.index):
                state.attempts += 1
                self.ledger.pay(state.charge.invoice_id, t, "customer")
                charge_id = f"ch_{state.charge.invoice_id.removeprefix('in_')}_s{state.attempts}"
                self.charge_event(truth, state, t, charge_id, None)
                self.invoice_event("invoice.paid", truth, state, t, status="paid")

    def on_finance(self, t: float, action: str, truth: AccountTruth, invoice_id: str) -> None:
        state = self.ledger.invoices[invoice_id]
        if action == "out_of_band" and state.owed:
            self.ledger.pay(invoice_id, t, "out_of_band")
            self.invoice_event(
                "invoice.paid", truth, state, t, status="paid", paid_out_of_band=True
            )
        elif action == "void" and state.status == "open":
            state.status, state.closed_at = "void", t
            self.invoice_event("invoice.voided", truth, state, t, status="void")
        elif action == "uncollectible" and state.status == "open":
            state.status, state.closed_at = "uncollectible", t
            self.invoice_event(
                "invoice.marked_uncollectible", truth, state, t, status="uncollectible"
            )

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
        done = (
            OutboxItem.objects.filter(
                kind=OutboxItem.Kind.CANCEL_SUBSCRIPTION,
                status=OutboxItem.Status.DONE,
                pk__gt=self.last_cancel_pk,
            )
            .order_by("pk")
            .values_list("pk", "account__stripe_customer_id", "completed_at")
        )
        for pk, customer, completed_at in done:
            self.last_cancel_pk = pk
            index = index_of(customer)
            t = (completed_at - START).total_seconds()
            self.cancelled.setdefault(index, t)
            self.subscription_event(
                "customer.subscription.deleted", self.book.accounts[index], t, "canceled"
            )
        self.echo_reverts()

    def echo_reverts(self) -> None:
        """Stripe's side of a reverted upgrade: its invoice voided, and the webhook for it."""
        done = (
            OutboxItem.objects.filter(
                kind=OutboxItem.Kind.REVERT_UPGRADE,
                status=OutboxItem.Status.DONE,
                pk__gt=self.last_revert_pk,
            )
            .order_by("pk")
            .values_list("pk", "account__stripe_customer_id", "completed_at", "result")
        )
        for pk, customer, completed_at, result in done:
            self.last_revert_pk = pk
            truth = self.book.accounts[index_of(customer)]
            t = (completed_at - START).total_seconds()
            for invoice_id in result.get("voided", []):
                state = self.ledger.invoices.get(invoice_id)
                if state is not None and state.status in ("open", "uncollectible"):
                    state.status, state.closed_at = "void", t
                    self.invoice_event("invoice.voided", truth, state, t, status="void")

    # --- delivering ---------------------------------------------------------------------

    def deliver_until(self, t: float) -> None:
        """Deliver, at the clock's time (self.now), every event due by `t`."""
        batch = []
        while self.queue and self.queue[0][0] <= t:
            batch.append(heapq.heappop(self.queue)[2])
        if not batch:
            return
        self.rng.shuffle(batch)  # arrival order within the hour is anybody's guess
        seen: set[str] = set()
        t = self.now
        for event in batch:
            payload, header = samples.signed(event, secret=SECRET, timestamp=_ts(t))
            response = self.client.post(
                "/webhooks/stripe/",
                data=payload,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=header,
            )
            self.run.deliveries[response.status_code] += 1
            if event["id"] in seen or response.json().get("duplicate"):
                self.run.duplicates_delivered += 1
            seen.add(event["id"])
        # With in-process tasks the request hands the event over itself; the pump then
        # takes anything still due (what beat runs every WEBHOOK_SWEEP_SECONDS).
        processing.sweep()
        outbox.drain()

    # --- the clock ----------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The next moment the service itself has work (a review, a retry, a side effect)."""
        now = at(self.now)
        review = DunningCase.objects.filter(
            state__in=OPEN_STATES, next_review_at__gt=now
        ).aggregate(at=Min("next_review_at"))["at"]
        item = OutboxItem.objects.filter(
            status=OutboxItem.Status.PENDING, next_attempt_at__gt=now
        ).aggregate(at=Min("next_attempt_at"))["at"]
        due = [(moment - START).total_seconds() for moment in (review, item) if moment]
        return min(due) if due else None

    def advance(self, t: float) -> None:
        if t > self.now or t == 0:
            test_clock.advance(to=at(t))
        self.now = t

    def sample(self, day: int) -> None:
        levels = Counter(
            DunningCase.objects.filter(state__in=OPEN_STATES).values_list("level", flat=True)
        )
        for level in LEVELS:
            self.run.levels[level][day - 1] = levels.get(level, 0)
        self.run.cancelled_by_day[day - 1] = DunningCase.objects.filter(
            resolution="cancelled"
        ).count()
        self.run.bad_debt_by_day[day - 1] = BadDebtEpisode.objects.filter(
            exited_at__isnull=True
        ).count()
        restricted: dict[int, set[str]] = {}
        for customer, code in Restriction.objects.values_list(
            "account__stripe_customer_id", "code"
        ):
            restricted.setdefault(index_of(customer), set()).add(code)
        for index, codes in restricted.items():
            self.run.core_days_lost += "core_access" in codes
            if self.book.accounts[index].paying_history:
                self.run.restricted_days += 1
                self.run.beyond_upgrade_days += bool(codes - {"upgraded_features"})
                self.run.no_core_days += "core_access" in codes

    # --- the run ----------------------------------------------------------------------

    def simulate(self) -> None:
        book = self.book
        end = book.end
        for truth in book.accounts:
            if truth.may_fail:
                self.history(truth)
            for charge in truth.charges:
                self.push(charge.at, "charge", (truth, charge))
        self.push(book.outage[0], "outage", True)
        self.push(book.outage[1], "outage", False)
        self.run.levels = {level: [0] * book.days for level in LEVELS}
        self.run.cancelled_by_day = [0] * book.days
        self.run.bad_debt_by_day = [0] * book.days
        day = 1
        while True:
            candidates = [day * DAY] if day <= book.days else []
            if self.happenings:
                candidates.append(self.happenings[0][0])
            if self.queue:
                candidates.append(self.queue[0][0])
            if (due := self.next_due()) is not None:
                candidates.append(due)
            upcoming = min(candidates, default=end)
            if upcoming > end:
                upcoming = end
            slot = min(end, max(self.now, math.ceil(upcoming / STEP) * STEP))
            self.advance(slot)
            self.run.iterations += 1
            self.echo()
            while self.happenings and self.happenings[0][0] <= slot:
                t, _, kind, payload = heapq.heappop(self.happenings)
                if kind == "charge":
                    self.on_charge(t, *payload)
                elif kind == "spell_end":
                    self.on_spell_end(t, *payload)
                elif kind == "first_seen":
                    self.on_first_seen(t, *payload)
                elif kind == "outage":
                    self.am.down = payload
                else:
                    self.on_finance(t, kind, *payload)
            self.deliver_until(slot)
            self.echo()
            if day <= book.days and slot >= day * DAY:
                self.sample(day)
                if self.progress and (day % 10 == 0 or day == book.days):
                    self.progress(f"day {day}/{book.days}")
                day += 1
            if slot >= end and day > book.days:
                break
        self.happenings.clear()

    def converge(self) -> None:
        """After the last day: deliver what Stripe still had in flight, let the outbox run,
        then recompute every account as drift detection would (DRIFT_DETECTED), counting
        the recomputes that found anything to change."""
        for _ in range(10):
            if not self.queue and not self.echoes:
                break
            self.echo()
            # Still in flight at the end: delivered now (the clock stays at the end).
            self.deliver_until(math.inf)
            outbox.drain()
        ids = list(Account.objects.order_by("pk").values_list("pk", flat=True))
        changed = 0
        for account_id in ids:
            outcome = handle(
                Trigger(TriggerKind.DRIFT_DETECTED, account_id, source="simulation:converge")
            )
            changed += bool(outcome.changes)
        outbox.drain()
        self.run.drift_accounts = len(ids)
        self.run.drift_changed = changed


@contextmanager
def _quiet() -> Iterator[None]:
    """The gateway and workers log every call at INFO: thousands of lines in a run."""
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Eager Celery has kombu say once that no broker host was given: known and harmless.
    logging.getLogger("kombu").setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def service_for_simulation(driver: Driver) -> Iterator[None]:
    """The service configured for a run, everything restored afterwards: the test clock
    on, tasks in-process, the simulated gateway answering from the book, Account
    Management on loopback, no real Stripe, no outcome subscribers."""
    saved_gateway = (SIMULATED.decide, SIMULATED.default)
    saved_eager = celery_app.conf.task_always_eager
    driver.am.start()
    try:
        with (
            override_settings(
                DUNNING_TEST_CLOCK=True,
                STRIPE_API_KEY="",
                STRIPE_WEBHOOK_SECRETS=[SECRET],
                # In-process tasks, as on the embedded default: the request processes.
                WEBHOOK_ENQUEUE_ON_INGEST=True,
                ACCOUNT_MANAGEMENT_URL=driver.am.url,
                ACCOUNT_MANAGEMENT_TIMEOUT_SECONDS=2.0,
                DUNNING_OUTCOME_WEBHOOK_URLS=[],
                # The service as it runs once rolled out: enforcing for every account.
                DUNNING_ROLLOUT_DEFAULT_STAGE="100",
                # Customer notices are planned and claimed as in production; the simulated
                # customers' mail goes nowhere.
                EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
            ),
            _quiet(),
        ):
            celery_app.conf.task_always_eager = True
            SIMULATED.reset()
            SIMULATED.decide = driver.decide
            yield
    finally:
        SIMULATED.decide, SIMULATED.default = saved_gateway
        SIMULATED.reset()
        celery_app.conf.task_always_eager = saved_eager
        driver.am.stop()


def run_service(book: Book, *, progress: Callable[[str], None] | None = None) -> ServiceRun:
    """Run the book through the service in the current database, which must hold no
    accounts or webhook events yet."""
    if Account.objects.exists() or WebhookEvent.objects.exists():
        raise SimulationError(
            "the database already holds accounts or webhook events; the simulation needs an "
            "empty one (manage.py simulate makes a scratch database of its own)"
        )
    driver = Driver(book, progress=progress)
    with service_for_simulation(driver):
        TestClock.objects.update_or_create(pk=TestClock.SINGLETON, defaults={"now": START})
        started = time.perf_counter()
        driver.simulate()
        driver.run.seconds["simulate"] = time.perf_counter() - started
        started = time.perf_counter()
        driver.converge()
        driver.run.seconds["converge"] = time.perf_counter() - started
        driver.run.account_management = {
            "requests": driver.am.requests,
            "refused_during_outage": driver.am.refused,
        }
        driver.run.am_standing = dict(driver.am.standing)
        driver.run.cancelled = set(driver.cancelled)
    driver.run.failure_lookup_available = (
        FailureLookup is not None and getattr(SIMULATED, "script_failure", None) is not None
    )
    return driver.run
