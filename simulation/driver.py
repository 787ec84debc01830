"""Run a book through the real service, on the project's test clock.

Every Stripe event is built from Stripe's own example objects (`billing_events.samples`),
signed with the webhook secret and posted to `/webhooks/stripe/` through Django's test
client: the real ingest, the real processing (in-process Celery, as on the embedded
default), the one handler, the outbox. The payment gateway is the shared `SIMULATED`
gateway, whose `decide` hook answers each retry from the book's hidden truth (a soft
decline clears on its day, a hard one only once the customer added a card, fraud and
authentication-required never off-session). Stripe's answer to a retry then comes back
as webhooks too, like Stripe sends them.

Time: the test clock starts at START and moves as `dunning.test_clock.advance(to=...)`
moves it, running every review, retry and side effect that falls due on the way; the run
is the only process on its database, so the clock is held in memory (`clock_walk`). The
driver stops at every hour in which something happens (a charge, a customer or finance
action, a delivery, a due retry or review, a day boundary) and delivers that hour's events
then, in a shuffled order, some late and some twice. Account Management is a real HTTP server
on loopback that answers 503 during the outage.

Cost: the stops follow the book's happenings and the service's own due work, never the
accounts: an account with nothing happening costs nothing between its events. What a run
costs is its events (each a request, a processing, a recompute) plus a fixed cost per stop
(the clock's walk), plus the daily sample and one recompute per account at the end.

The run needs a database of its own (the command makes one): it adds accounts and moves
the shared test clock.
"""

import heapq
import math
from collections.abc import Callable

from django.test import Client

from billing_events import samples
from billing_events.models import Account
from dunning import outbox
from dunning.engine import handle
from dunning.intake import processing
from dunning.triggers import Trigger, TriggerKind
from simulation.account_management import AccountManagementStub
from simulation.book import DAY, LATE, ON_TIME, AccountTruth, Book, Charge, Spell
from simulation.clock_walk import ClockWalk
from simulation.due import Due
from simulation.scratch import GrowingStatistics
from simulation.service_run import LEVELS, SECRET, START, _ts, at, sample_day
from simulation.stripe_side import StripeSide

STEP = 3600.0  # deliveries are batched per hour of simulated time


class Driver(StripeSide):
    def __init__(
        self,
        book: Book,
        *,
        progress: Callable[[str], None] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(book)
        self.progress = progress
        # (index, count): this run takes the book's accounts whose index % count == index
        # (`--workers`); (0, 1) is the whole book.
        self.shard = shard
        self.client = Client()
        self.happenings: list[tuple[float, int, str, object]] = []
        self.now = 0.0
        self.am = AccountManagementStub()
        self.walk: ClockWalk  # the run's clock, from `run_service`
        self.statistics = GrowingStatistics()

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
            event = self.event(truth.index, "invoice.paid", obj, created)
            heapq.heappush(self.queue, (0.0, next(self.order), truth.index, event))

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
            self.send(truth.index, self.event(truth.index, "payment_method.attached", obj, t), t)
            obj = samples.customer(id=truth.customer, created=_ts(t), default_payment_method=method)
            previous = {"invoice_settings": {"default_payment_method": None}}
            event = self.event(truth.index, "customer.updated", obj, t, previous)
            self.send(truth.index, event, t)
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

    # --- delivering ---------------------------------------------------------------------

    def deliver_until(self, t: float) -> None:
        """Deliver, at the clock's time (self.now), every event due by `t`."""
        by_account: dict[int, list[dict]] = {}
        while self.queue and self.queue[0][0] <= t:
            _, _, account, event = heapq.heappop(self.queue)
            by_account.setdefault(account, []).append(event)
        if not by_account:
            return
        # Arrival order within the hour is anybody's guess: shuffled per account, from the
        # account's own stream, and the accounts one after the other. Accounts share
        # nothing in the service, so only the order within an account can matter, and it
        # then does not depend on which other accounts are in the run (see `noise`).
        batch = []
        for account in sorted(by_account):
            events = by_account[account]
            self.noise(account).shuffle(events)
            batch += events
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
            self.service_ran = True
            if event["id"] in seen or response.json().get("duplicate"):
                self.run.duplicates_delivered += 1
            seen.add(event["id"])
        self.statistics.grown_to(sum(self.run.deliveries.values()))
        # With in-process tasks the request hands the event over itself; the pump then
        # takes anything still due (what beat runs every WEBHOOK_SWEEP_SECONDS), when
        # anything is (one statement asks).
        if self.walk.due().now:
            processing.sweep()
            outbox.drain()
            self.service_ran = True

    # --- the clock ----------------------------------------------------------------------

    def ran(self) -> None:
        """The walk ran due work (`ClockWalk.on_run`)."""
        self.service_ran = True

    def advance(self, t: float, due: Due) -> None:
        """The test clock to `t`, running what falls due on the way, as
        `test_clock.advance` does (`ClockWalk`: the clock held in memory); `due` is the
        walk's probe at now."""
        self.walk.advance(at(t), due)
        self.now = t

    # --- the run ----------------------------------------------------------------------

    def simulate(self) -> None:
        book = self.book
        end = book.end
        index, count = self.shard
        for truth in book.accounts[index::count]:
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
            # The next moment the service itself has work (a review, a retry, a side
            # effect); the same probe then starts the walk.
            due = self.walk.due()
            if due.next is not None:
                candidates.append((due.next - START).total_seconds())
            upcoming = min(candidates, default=end)
            if upcoming > end:
                upcoming = end
            slot = min(end, max(self.now, math.ceil(upcoming / STEP) * STEP))
            self.advance(slot, due)
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
                sample_day(self.run, day)
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
            self.service_ran = True
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
