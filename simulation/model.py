"""A dunning policy as a small pure-Python model, with each part of the service's design
switchable: the legacy baseline is every part off, the ablation variants switch one off.

It runs on the same book as the service (the same customers, cards, spells and finance
actions), keeps a ledger like every world, and reports through `fair`, so each figure is
defined and counted the same way for every row. The parts:

- decline classes. On: soft declines retry on the soft cadence; hard, fraud and
  authentication-required declines are not retried off-session but wait for the customer
  (a new card is retried at once). Off: the soft cadence for every decline, on whatever
  card is on file then; a card update asks for nothing.
- ladder. On: the service's base ladder by the age of the earliest unpaid invoice (premium
  7 d, read-only 14 d, suspended = bad debt 30 d, cancelled 45 d; twice as long for a
  paying history, half for fraud; at most 500 minor units owed: premium, then cancelled),
  a written-off invoice is bad debt at once. Off: a binary bad-debt flag when an invoice's
  retries run out (its cadence's last day: retries stopped by the classes end there too)
  or it is written off; nothing ever cancels (limbo).
- upgrade rule. On: with only upgrade invoices unpaid the account is never put in bad debt;
  the upgrade is reverted (its invoice voided, written off or not) 30 days on. Off: an
  upgrade invoice counts like any other.
- outbox. On: Account Management always hears of bad debt and its lifting (retried until
  acknowledged). Off: a synchronous call; during the outage it fails, the change is
  dropped and never replayed (the legacy stuck-events table): the account keeps the
  standing it had until the next change the policy decides.

Core access is lost while Account Management holds the account in bad debt, and from a
cancellation on. Rung dwell times, card-network caps and decline look-ups are not modelled
(the real service run measures them).
"""

import heapq
import itertools
from dataclasses import dataclass, field

from simulation.book import DAY, AccountTruth, Book, Charge, Spell
from simulation.fair import bad_debt, limbo
from simulation.hardcases import ledger_measures
from simulation.ledger import InvoiceState, Ledger, money_and_retries

SOFT_CADENCE_DAYS = (1, 3, 5, 8, 12, 17, 23)  # dunning.policy.DEFAULT_RETRIES, soft class
SMALL_AMOUNT_MINOR = 500
SUSPEND_DAYS, CANCEL_DAYS, REVERT_DAYS = 30.0, 45.0, 30.0
GOOD_PAYER_FACTOR, FRAUD_FACTOR = 2.0, 0.5
WAITS_FOR_CUSTOMER = ("hard", "fraud", "auth")


@dataclass(frozen=True)
class Design:
    name: str
    classes: bool = True
    ladder: bool = True
    upgrade_rule: bool = True
    outbox: bool = True
    retry_days: tuple[float, ...] = SOFT_CADENCE_DAYS


@dataclass
class ModelRun:
    design: Design
    ledger: Ledger = field(default_factory=Ledger)
    bad_debt_entries: list[tuple[int, float]] = field(default_factory=list)
    cancelled: set[int] = field(default_factory=set)
    planned: set[int] = field(default_factory=set)
    dropped_escalations: int = 0
    dropped_lifts: int = 0
    applied_in_outage: int = 0
    core_days_lost: int = 0
    paying_history_core_days_lost: int = 0
    disagree: int = 0
    series: dict[str, list[int]] = field(default_factory=dict)


class _Account:
    def __init__(self, truth: AccountTruth, book: Book, run: ModelRun) -> None:
        self.truth, self.book, self.run, self.design = truth, book, run, run.design
        self.ledger = run.ledger
        self.queue: list[tuple[float, int, int, str, object]] = []
        self.order = itertools.count()
        self.in_bad_debt = False  # what the policy decided
        self.am_bad_debt = False  # what Account Management holds
        self.cancelled_at: float | None = None
        self.last_class: dict[str, str] = {}  # invoice -> class of its latest decline
        self.seen: dict[str, float] = {}  # invoice -> when the policy first heard of it

    def push(self, t: float, kind: str, payload: object, priority: int = 0) -> None:
        heapq.heappush(self.queue, (t, priority, next(self.order), kind, payload))

    def owed(self, t: float) -> list[InvoiceState]:
        return [
            s
            for s in self.ledger.owed(self.truth.index)
            if self.seen.get(s.charge.invoice_id, float("inf")) <= t
        ]

    # --- what the policy wants -------------------------------------------------------

    def counted(self, owed: list[InvoiceState]) -> list[InvoiceState]:
        """The invoices that can put the account in bad debt."""
        if self.design.upgrade_rule:
            return [s for s in owed if not s.upgrade]
        return owed

    def ladder_age(self, t: float, owed: list[InvoiceState]) -> float:
        factor = GOOD_PAYER_FACTOR if self.truth.paying_history else 1.0
        if any(self.last_class.get(s.charge.invoice_id) == "fraud" for s in owed):
            factor *= FRAUD_FACTOR
        return (t - min(s.charge.at for s in owed)) / DAY / factor

    def review(self, t: float) -> None:
        if self.cancelled_at is not None:
            return
        owed = self.owed(t)
        counted = self.counted(owed)
        if self.design.upgrade_rule:
            for state in owed:
                since = t - self.seen[state.charge.invoice_id]
                if state.upgrade and not counted and since >= REVERT_DAYS * DAY:
                    state.status, state.closed_at = "void", t  # reverted
        written_off = any(s.status == "uncollectible" for s in counted)
        if self.design.ladder:
            small = sum(s.charge.amount for s in counted) <= SMALL_AMOUNT_MINOR
            age = self.ladder_age(t, counted) if counted else 0.0
            if counted and age >= CANCEL_DAYS:
                self.cancel(t)
                return
            wanted = bool(counted) and (written_off or (age >= SUSPEND_DAYS and not small))
        else:
            wanted = written_off or any(s.exhausted_at is not None for s in counted)
        if wanted != self.in_bad_debt:
            self.change(t, wanted)

    def change(self, t: float, wanted: bool) -> None:
        """The policy moves the account in or out of bad debt and tells Account Management."""
        start, end = self.book.outage
        if not self.design.outbox and start <= t < end:
            if wanted:
                self.run.dropped_escalations += 1
            else:
                self.run.dropped_lifts += 1
            self.in_bad_debt = wanted  # the policy moved on; AM never hears of it
            return
        if start <= t < end:
            self.run.applied_in_outage += 1
        self.in_bad_debt = self.am_bad_debt = wanted
        if wanted:
            self.run.bad_debt_entries.append((self.truth.index, t))

    def cancel(self, t: float) -> None:
        self.cancelled_at = t
        self.run.cancelled.add(self.truth.index)
        if not self.in_bad_debt:
            self.change(t, True)

    # --- what happens -----------------------------------------------------------------

    def charge(self, t: float, charge: Charge) -> None:
        if self.cancelled_at is not None:
            return  # cancelled: Stripe bills no more
        spell, new = self.ledger.first_charge(self.truth, charge, t)
        if spell is None:
            return
        seen = charge.seen_at if charge.old else t
        invoice = charge.invoice_id
        self.seen[invoice] = seen
        self.last_class[invoice] = spell.trouble.kind
        for number, days in enumerate(self.design.retry_days):
            self.push(seen + days * DAY, "retry", (invoice, number))
        self.push(seen + self.design.retry_days[-1] * DAY, "exhaust", invoice, priority=1)
        for after, action in charge.fate.actions():
            self.push(seen + after, action, invoice)
        if new and spell.end is not None:
            self.push(spell.end, "spell_end", spell)
        self.push(seen, "review", None, priority=1)

    def attempt(self, t: float, invoice: str) -> None:
        spell = self.ledger.retry(self.truth.index, invoice, t)
        if spell is not None:
            self.last_class[invoice] = spell.trouble.kind

    def retry(self, t: float, invoice: str, number: int) -> None:
        state = self.ledger.invoices[invoice]
        if state.status != "open" or self.cancelled_at is not None:
            return
        if self.design.classes and self.last_class.get(invoice) in WAITS_FOR_CUSTOMER:
            return  # waiting for the customer
        self.attempt(t, invoice)

    def exhaust(self, t: float, invoice: str) -> None:
        state = self.ledger.invoices[invoice]
        if state.status == "open":
            state.exhausted_at = t

    def spell_end(self, t: float, spell: Spell) -> None:
        self.ledger.cards[self.truth.index].spell_ended(spell)
        kind = spell.trouble.kind
        if kind in ("fraud", "auth"):
            # The customer comes back on-session and pays what is owed.
            for state in self.ledger.owed(self.truth.index):
                self.ledger.pay(state.charge.invoice_id, t, "customer")
        elif kind == "hard" and self.design.classes and self.cancelled_at is None:
            # A new card: retried at once (the service plans a retry on a card update).
            for state in self.owed(t):
                if state.status == "open":
                    self.attempt(t, state.charge.invoice_id)

    def finance(self, t: float, action: str, invoice: str) -> None:
        state = self.ledger.invoices[invoice]
        if action == "out_of_band" and state.owed:
            self.ledger.pay(invoice, t, "out_of_band")
        elif action in ("void", "uncollectible") and state.status == "open":
            state.status, state.closed_at = action, t

    def sample(self, day: int) -> None:
        series = self.run.series
        if self.am_bad_debt or self.cancelled_at is not None:
            self.run.core_days_lost += 1
            self.run.paying_history_core_days_lost += self.truth.paying_history
        series["bad_debt"][day - 1] += self.in_bad_debt
        series["retrying"][day - 1] += any(
            s.status == "open" and s.exhausted_at is None for s in self.owed(day * DAY)
        )

    def run_to_end(self) -> None:
        for charge in self.truth.charges:
            self.push(charge.at, "charge", charge)
        if self.truth.may_fail:
            for day in range(1, self.book.days + 1):
                self.push(day * DAY, "sample", day, priority=2)
        while self.queue:
            t, _, _, kind, payload = heapq.heappop(self.queue)
            if t > self.book.end:
                break
            if kind == "charge":
                self.charge(t, payload)
            elif kind == "retry":
                self.retry(t, *payload)
            elif kind == "exhaust":
                self.exhaust(t, payload)
            elif kind == "spell_end":
                self.spell_end(t, payload)
            elif kind == "sample":
                self.review(t)
                self.sample(payload)
                continue
            elif kind != "review":
                self.finance(t, kind, payload)
            self.review(t)
        self.finish()

    def finish(self) -> None:
        end = self.book.end
        owed = self.owed(end)
        if self.cancelled_at is None and owed:
            if self.design.ladder and self.counted(owed):
                self.run.planned.add(self.truth.index)  # the ladder climbs on
            elif any(s.status == "open" and s.exhausted_at is None for s in owed):
                self.run.planned.add(self.truth.index)  # a retry or its exhaustion is ahead
            elif self.design.upgrade_rule and any(s.upgrade for s in owed):
                self.run.planned.add(self.truth.index)  # the revert is ahead
        self.run.disagree += self.in_bad_debt != self.am_bad_debt


def run_model(book: Book, design: Design) -> ModelRun:
    run = ModelRun(design)
    run.series = {name: [0] * book.days for name in ("retrying", "bad_debt")}
    for truth in book.accounts:
        _Account(truth, book, run).run_to_end()
    return run


def model_report(book: Book, run: ModelRun) -> dict:
    return {
        **money_and_retries(run.ledger),
        **bad_debt(run.bad_debt_entries, run.ledger, book.days),
        **ledger_measures(run.ledger),
        **limbo(run.ledger, cancelled=run.cancelled, planned=run.planned),
        "cancelled": len(run.cancelled),
        "core_access_days_lost": run.core_days_lost,
        "paying_history_no_core_days": run.paying_history_core_days_lost,
        "disagree_after_convergence": run.disagree,
        "lost_or_stuck": {
            "escalations_dropped_in_outage": run.dropped_escalations,
            "liftings_dropped_in_outage": run.dropped_lifts,
        },
        "lost_or_stuck_total": run.dropped_escalations + run.dropped_lifts,
        "escalations_during_outage": {
            "applied": run.applied_in_outage,
            "blocked": run.dropped_escalations,
        },
        "series": run.series,
    }
