"""Stripe's side of one world: every invoice, every charge attempt, every card.

Both worlds keep one: the legacy model updates it as it goes, and the service run updates
it from what the simulated Stripe did (first charges, the gateway's answers to the
service's retries, customer payments, finance's actions). Money, recovery times, retries
per decline class and card-network limits are all measured from it, by the same code for
both worlds.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from simulation.book import DAY, AccountTruth, Card, Charge, Spell

NETWORK_CAP = 15  # attempts on one card within the window (Visa)
NETWORK_WINDOW = 30 * DAY
RECOVERY_BUCKETS = ((0, 1), (1, 3), (3, 7), (7, 14), (14, 21), (21, 30), (30, 45), (45, None))


@dataclass
class InvoiceState:
    charge: Charge
    account: int
    status: str = "open"  # open | paid | void | uncollectible
    failed_at: float | None = None  # the first attempt failed then
    paid_at: float | None = None
    paid_by: str = ""  # first_charge | retry | customer | out_of_band
    closed_at: float | None = None  # voided or marked uncollectible
    attempts: int = 0  # Stripe's attempt_count
    exhausted_at: float | None = None  # the policy stopped retrying (legacy only)
    failed_class: str = ""  # soft | hard | fraud | auth: the spell that declined it first

    @property
    def owed(self) -> bool:
        return self.status in ("open", "uncollectible")

    @property
    def upgrade(self) -> bool:
        return self.charge.kind == "upgrade"


@dataclass(frozen=True)
class Attempt:
    t: float
    account: int
    invoice_id: str
    card: int
    retry: bool
    declined_by: str  # the spell's class, "" when it succeeded


@dataclass
class Ledger:
    invoices: dict[str, InvoiceState] = field(default_factory=dict)
    by_account: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    attempts: list[Attempt] = field(default_factory=list)
    cards: dict[int, Card] = field(default_factory=lambda: defaultdict(Card))

    def first_charge(
        self, truth: AccountTruth, charge: Charge, t: float
    ) -> tuple[Spell | None, bool]:
        """The invoice is created and charged automatically at once."""
        card = self.cards[truth.index]
        spell, new = card.charge(charge, t)
        state = InvoiceState(charge, truth.index, attempts=1)
        self.invoices[charge.invoice_id] = state
        self.by_account[truth.index].append(charge.invoice_id)
        if spell is None:
            state.status, state.paid_at, state.paid_by = "paid", t, "first_charge"
        else:
            state.failed_at, state.failed_class = t, spell.trouble.kind
        if spell is not None or truth.may_fail:
            self.attempts.append(
                Attempt(t, truth.index, charge.invoice_id, card.generation, False, _by(spell))
            )
        return spell, new

    def retry(self, account: int, invoice_id: str, t: float) -> Spell | None:
        """An off-session retry on the account's current card; paid unless a spell is on."""
        card = self.cards[account]
        spell = card.active(t)
        state = self.invoices[invoice_id]
        state.attempts += 1
        self.attempts.append(Attempt(t, account, invoice_id, card.generation, True, _by(spell)))
        if spell is None:
            self.pay(invoice_id, t, "retry")
        return spell

    def pay(self, invoice_id: str, t: float, by: str) -> None:
        state = self.invoices[invoice_id]
        state.status, state.paid_at, state.paid_by = "paid", t, by

    def owed(self, account: int) -> list[InvoiceState]:
        return [self.invoices[i] for i in self.by_account.get(account, ()) if self.invoices[i].owed]


def _by(spell: Spell | None) -> str:
    return spell.trouble.kind if spell is not None else ""


def network_cap_violations(attempts: list[Attempt]) -> dict[str, int]:
    """Attempts made beyond NETWORK_CAP on one card within NETWORK_WINDOW, and the cards."""
    per_card: dict[tuple[int, int], list[float]] = defaultdict(list)
    for attempt in attempts:
        per_card[(attempt.account, attempt.card)].append(attempt.t)
    over, cards = 0, 0
    for times in per_card.values():
        times.sort()
        start, found = 0, False
        for end, t in enumerate(times):
            while times[start] <= t - NETWORK_WINDOW:
                start += 1
            if end - start + 1 > NETWORK_CAP:
                over += 1
                found = True
        cards += found
    return {"attempts_over_cap": over, "cards_over_cap": cards}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _bucket_label(low: float, high: float | None) -> str:
    return f"{low:g}-{high:g}" if high is not None else f"{low:g}+"


def money_and_retries(ledger: Ledger) -> dict:
    """What the world collected from the invoices whose first charge failed, how fast, and
    what its retries were spent on."""
    failed = [s for s in ledger.invoices.values() if s.failed_at is not None]
    recovered = [s for s in failed if s.status == "paid"]
    failed_amount = sum(s.charge.amount for s in failed)
    recovered_amount = sum(s.charge.amount for s in recovered)
    by_channel: dict[str, int] = defaultdict(int)
    for state in recovered:
        by_channel[state.paid_by] += state.charge.amount
    days = [(s.paid_at - s.failed_at) / DAY for s in recovered]
    histogram = [
        [_bucket_label(low, high), sum(1 for d in days if d >= low and (high is None or d < high))]
        for low, high in RECOVERY_BUCKETS
    ]
    by_class = {}
    for kind in ("soft", "hard", "fraud", "auth"):
        of_kind = [s for s in failed if s.failed_class == kind]
        paid = [s for s in of_kind if s.status == "paid"]
        kind_days = [(s.paid_at - s.failed_at) / DAY for s in paid]
        owed = sum(s.charge.amount for s in of_kind)
        by_class[kind] = {
            "failed_invoices": len(of_kind),
            "recovered_invoices": len(paid),
            "recovery_rate": _ratio(sum(s.charge.amount for s in paid), owed),
            "median_days_to_recovery": _round(statistics.median(kind_days) if kind_days else None),
        }
    retries = [a for a in ledger.attempts if a.retry]
    on_class: dict[str, int] = defaultdict(int)
    for attempt in retries:
        on_class[attempt.declined_by or "succeeded"] += 1
    median = statistics.median(days) if days else None
    return {
        "failed_invoices": len(failed),
        "failed_amount": failed_amount,
        "recovered_invoices": len(recovered),
        "recovered_amount": recovered_amount,
        "recovery_rate": _ratio(recovered_amount, failed_amount),
        "recovered_by": {key: by_channel[key] for key in sorted(by_channel)},
        "voided_amount": sum(s.charge.amount for s in failed if s.status == "void"),
        "uncollectible_amount": sum(s.charge.amount for s in failed if s.status == "uncollectible"),
        "still_open_amount": sum(s.charge.amount for s in failed if s.status == "open"),
        "median_days_to_recovery": round(median, 2) if median is not None else None,
        "p90_days_to_recovery": _round(_percentile(days, 0.9)),
        # Shares of the failed money back within 7 and 14 days of the failure: unlike the
        # median of recovered invoices, not flattered by recovering fewer, earlier ones.
        "recovered_within_7_days": _ratio(_within(recovered, 7), failed_amount),
        "recovered_within_14_days": _ratio(_within(recovered, 14), failed_amount),
        "days_to_recovery_histogram": histogram,
        "by_decline_class": by_class,
        "retries": len(retries),
        "retries_succeeded": on_class.get("succeeded", 0),
        "retries_on_soft": on_class.get("soft", 0),
        "retries_on_hard": on_class.get("hard", 0),
        "retries_on_fraud": on_class.get("fraud", 0),
        "retries_on_auth_required": on_class.get("auth", 0),
        "network_cap": network_cap_violations(ledger.attempts),
    }


def _within(recovered: list[InvoiceState], days: float) -> int:
    return sum(s.charge.amount for s in recovered if s.paid_at - s.failed_at < days * DAY)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None
