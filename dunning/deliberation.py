"""One decision being made (`Deliberation`): the facts, and what each rule of
`decision_rules` concluded so far, with the small readings of invoices the rules share."""

from dataclasses import dataclass, field
from datetime import datetime

from dunning.models import CaseState, Resolution
from dunning.policy import DeclineClass, Level, Policy, Rung, Track
from dunning.retries import RetryDecision
from dunning.rules import Rule
from dunning.snapshot import CaseView, InvoiceView, Snapshot

UPGRADE_REASON = "subscription_update"


def is_upgrade(invoice: InvoiceView) -> bool:
    return invoice.billing_reason == UPGRADE_REASON


def overdue_by_currency(invoices: list[InvoiceView]) -> dict[str, int]:
    overdue: dict[str, int] = {}
    for invoice in invoices:
        overdue[invoice.currency] = overdue.get(invoice.currency, 0) + invoice.amount_remaining
    return overdue


def money_text(overdue: dict[str, int]) -> str:
    return ", ".join(f"{amount} {currency}" for currency, amount in sorted(overdue.items()))


@dataclass
class Deliberation:
    """One decision being made: the facts, and what each rule concluded so far."""

    snapshot: Snapshot
    now: datetime
    policy: Policy
    rules: list[Rule] = field(default_factory=list)
    case: CaseView | None = None
    covered: list[InvoiceView] = field(default_factory=list)
    track: Track = Track.BASE
    ladder_start: datetime | None = None
    decline_class: DeclineClass = DeclineClass.SOFT
    bad_debt_floor: bool = False  # a base invoice was written off
    rung: Rung | None = None
    level_since: datetime | None = None
    next_review_at: datetime | None = None
    # The rung after this one and when it takes effect, if nothing changes (notices).
    next_step: tuple[Level, datetime] | None = None
    retry: RetryDecision | None = None
    cancel: frozenset[str] = frozenset()
    revert: frozenset[str] = frozenset()  # subscriptions whose upgrade is reverted
    state: CaseState = CaseState.RETRYING
    # Set by a rule that settles the case: (resolution, level).
    settled: tuple[Resolution, Level] | None = None

    def note(self, name: str, conclusion: str, facts: dict | None = None) -> None:
        self.rules.append(Rule(name, conclusion, facts or {}))

    def settle(self, resolution: Resolution, level: Level) -> None:
        self.settled = (resolution, level)

    @property
    def unpaid(self) -> list[InvoiceView]:
        return [i for i in self.covered if i.status == "open"]

    @property
    def written_off(self) -> list[InvoiceView]:
        return [i for i in self.covered if i.status == "uncollectible"]

    @property
    def outstanding(self) -> list[InvoiceView]:
        return self.unpaid + self.written_off

    @property
    def case_pks(self) -> frozenset[int]:
        return frozenset(i.pk for i in self.covered)

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(i.subscription_id for i in self.outstanding if i.subscription_id)

    @property
    def level(self) -> Level:
        return self.rung.level if self.rung else Level.NONE

    def review_at(self, at: datetime | None) -> None:
        if at is not None and (self.next_review_at is None or at < self.next_review_at):
            self.next_review_at = at
