"""The legacy policy as a baseline: a small, honest model of what this service replaces.

It runs on the same book (the same customers, cards, spells and finance actions) as the
service, in plain Python, and models the faults DESIGN.md lists, no more:

- one retry cadence for every decline: 4 retries, 3, 8, 15 and 22 days after the first
  failure, whatever the decline code (hard, fraud and authentication-required included),
  on whatever card is on file then. Shaped like Stripe's classic custom retry schedule (a
  fixed number of retries a fixed number of days apart; docs.stripe.com/billing/
  revenue-recovery/smart-retries#custom-retry-schedule); the exact days are an assumption;
- a card update does not trigger a retry: the next scheduled one uses the new card;
- when the last retry fails: a binary bad-debt flag, which bans the account outright (no
  ladder), set by a synchronous call to Account Management;
- upgrade/proration invoices are treated like any other invoice (so an unpaid upgrade
  alone puts a paying account in bad debt);
- exhausted accounts are left in limbo: never retried again, never cancelled;
- during the Account Management outage the synchronous call fails, the escalation (or the
  lifting) is dropped into a stuck-events table and never replayed;
- an invoice marked uncollectible by finance flags the account at once (like the service);
- money that comes in (a retry, the customer on-session, out of band) lifts the flag once
  nothing exhausted is owed;
- an old invoice (failed before the run, first heard of 20-60 days later) starts its retry
  clock when it is first heard of, as the service's handling does; late or missing charge
  events change nothing for it, since it never reads a decline code.

It does not model anything the legacy system might have done better or worse than that
(e.g. its own lost webhooks): where unsure, it is generous to the legacy system.
"""

import heapq
import itertools
from dataclasses import dataclass, field

from dunning.simulation.generator import DAY, AccountTruth, Book, Charge, Spell
from dunning.simulation.hardcases import ledger_measures, written_off_upgrade_alone
from dunning.simulation.ledger import Ledger, money_and_retries

LEGACY_RETRY_DAYS = (3, 8, 15, 22)


@dataclass
class LegacyRun:
    ledger: Ledger = field(default_factory=Ledger)
    bad_debt_entries: int = 0
    upgrade_only_bad_debt: int = 0
    upgrade_only_accounts: set[int] = field(default_factory=set)
    upgrade_only_after_write_off: int = 0
    blocked_escalations: int = 0
    blocked_lifts: int = 0
    escalations_in_outage: int = 0
    limbo: int = 0
    disagree: int = 0
    series: dict[str, list[int]] = field(default_factory=dict)
    restricted_days: float = 0
    no_core_days: float = 0


class _Account:
    """One legacy account's flag and its clock of events."""

    def __init__(self, truth: AccountTruth, book: Book, run: LegacyRun) -> None:
        self.truth, self.book, self.run = truth, book, run
        self.ledger = run.ledger
        self.flagged = False
        self.queue: list[tuple[float, int, int, str, object]] = []
        self.order = itertools.count()

    def push(self, t: float, kind: str, payload: object, priority: int = 0) -> None:
        heapq.heappush(self.queue, (t, priority, next(self.order), kind, payload))

    def in_outage(self, t: float) -> bool:
        start, end = self.book.outage
        return start <= t < end

    def escalate(self, t: float) -> None:
        if self.flagged:
            return
        if self.in_outage(t):
            self.run.blocked_escalations += 1
            return
        self.flagged = True
        self.run.bad_debt_entries += 1
        owed = self.ledger.owed(self.truth.index)
        if owed and all(state.upgrade for state in owed):
            self.run.upgrade_only_bad_debt += 1
            self.run.upgrade_only_accounts.add(self.truth.index)
        if written_off_upgrade_alone(owed, t):
            self.run.upgrade_only_after_write_off += 1

    def still_owes_after_exhaustion(self) -> bool:
        return any(
            state.status == "uncollectible" or state.exhausted_at is not None
            for state in self.ledger.owed(self.truth.index)
        )

    def lift(self, t: float) -> None:
        if not self.flagged or self.still_owes_after_exhaustion():
            return
        if self.in_outage(t):
            self.run.blocked_lifts += 1
            return
        self.flagged = False

    def charge(self, t: float, charge: Charge) -> None:
        spell, new = self.ledger.first_charge(self.truth, charge, t)
        if spell is None:
            return
        seen = charge.seen_at if charge.old else t
        for number, days in enumerate(LEGACY_RETRY_DAYS):
            self.push(seen + days * DAY, "retry", (charge.invoice_id, number))
        for after, action in charge.fate.actions():
            self.push(seen + after, action, charge.invoice_id)
        if new and spell.end is not None:
            self.push(spell.end, "spell_end", spell)

    def retry(self, t: float, invoice_id: str, number: int) -> None:
        state = self.ledger.invoices[invoice_id]
        if state.status != "open":
            return
        if self.ledger.retry(self.truth.index, invoice_id, t) is None:
            self.lift(t)
        elif number == len(LEGACY_RETRY_DAYS) - 1:
            state.exhausted_at = t
            self.escalate(t)

    def spell_end(self, t: float, spell: Spell) -> None:
        self.ledger.cards[self.truth.index].spell_ended(spell)
        if spell.trouble.kind in ("fraud", "auth"):
            # The customer comes back on-session and pays what is owed.
            for state in self.ledger.owed(self.truth.index):
                self.ledger.pay(state.charge.invoice_id, t, "customer")
            self.lift(t)

    def finance(self, t: float, action: str, invoice_id: str) -> None:
        state = self.ledger.invoices[invoice_id]
        if action == "out_of_band" and state.owed:
            self.ledger.pay(invoice_id, t, "out_of_band")
            self.lift(t)
        elif action == "void" and state.status == "open":
            state.status, state.closed_at = "void", t
            self.lift(t)
        elif action == "uncollectible" and state.status == "open":
            state.status, state.closed_at = "uncollectible", t
            self.escalate(t)

    def sample(self, day: int) -> None:
        owed = self.ledger.owed(self.truth.index)
        series = self.run.series
        if any(s.status == "open" and s.exhausted_at is None for s in owed):
            series["retrying"][day - 1] += 1
        if self.flagged:
            series["bad_debt_flag"][day - 1] += 1
            if self.truth.paying_history:
                self.run.restricted_days += 1
                self.run.no_core_days += 1
        elif self.still_owes_after_exhaustion():
            series["exhausted_unflagged"][day - 1] += 1

    def run_to_end(self) -> None:
        for charge in self.truth.charges:
            self.push(charge.at, "charge", charge)
        if self.truth.may_fail:
            for day in range(1, self.book.days + 1):
                self.push(day * DAY, "sample", day, priority=1)
        while self.queue:
            t, _, _, kind, payload = heapq.heappop(self.queue)
            if t > self.book.end:
                break
            if kind == "charge":
                self.charge(t, payload)
            elif kind == "retry":
                self.retry(t, *payload)
            elif kind == "spell_end":
                self.spell_end(t, payload)
            elif kind == "sample":
                self.sample(payload)
            else:
                self.finance(t, kind, payload)
        # Limbo: money owed after dunning gave up (retries exhausted or written off) on a
        # subscription nobody cancels, with nothing further planned.
        owes = self.still_owes_after_exhaustion()
        retrying = any(
            s.status == "open" and s.exhausted_at is None
            for s in self.ledger.owed(self.truth.index)
        )
        self.run.limbo += owes and not retrying
        self.run.disagree += self.flagged != owes


def run_legacy(book: Book) -> LegacyRun:
    run = LegacyRun()
    run.series = {
        name: [0] * book.days for name in ("retrying", "bad_debt_flag", "exhausted_unflagged")
    }
    for truth in book.accounts:
        _Account(truth, book, run).run_to_end()
    run.escalations_in_outage = run.blocked_escalations
    return run


def legacy_report(book: Book, run: LegacyRun) -> dict:
    per_day = run.upgrade_only_bad_debt / book.days if book.days else 0.0
    return {
        **money_and_retries(run.ledger),
        "bad_debt_entries": run.bad_debt_entries,
        "upgrade_only_bad_debt": run.upgrade_only_bad_debt,
        "upgrade_only_bad_debt_accounts": len(run.upgrade_only_accounts),
        "upgrade_only_bad_debt_per_day": round(per_day, 4),
        "upgrade_only_bad_debt_per_year": round(per_day * 365, 1),
        "upgrade_only_bad_debt_after_an_upgrade_write_off": run.upgrade_only_after_write_off,
        **ledger_measures(run.ledger),
        "limbo": run.limbo,
        "disagree_after_convergence": run.disagree,
        "lost_or_stuck": {
            "escalations_dropped_in_outage": run.blocked_escalations,
            "liftings_dropped_in_outage": run.blocked_lifts,
        },
        "lost_or_stuck_total": run.blocked_escalations + run.blocked_lifts,
        "escalations_during_outage": {"applied": 0, "blocked": run.blocked_escalations},
        "paying_history_restricted_days": run.restricted_days,
        "paying_history_beyond_upgrade_days": run.restricted_days,
        "paying_history_no_core_days": run.no_core_days,
        "series": run.series,
    }
