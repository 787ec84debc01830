"""The book's types: each customer's hidden truth (charges, troubles, fates), the book,
and the card spells a charge runs into. Times are seconds since the start of the run.
Drawn by `generator`; read by both worlds."""

from dataclasses import dataclass, field

from simulation.mix import Mix

DAY = 86400.0
CYCLE_DAYS = 30
PAYING_HISTORY_MONTHS = 6  # the ladder's good-payer threshold (6 paid invoices)
HISTORY_REPLAYED = 6  # paid invoices replayed before the run (what the engine reads)

ON_TIME, LATE, MISSING = "on_time", "late", "missing"  # the first attempt's charge events


@dataclass(frozen=True)
class Trouble:
    """What goes wrong if this charge fails: the class, the code, and when it ends."""

    kind: str  # soft | hard | fraud | auth
    code: str
    ends_after: float | None  # seconds after the failed charge; None: never


@dataclass(frozen=True)
class Fate:
    """What happens to the invoice, if it failed and is still open by then."""

    out_of_band_after: float | None = None
    void_after: float | None = None
    uncollectible_after: float | None = None

    def actions(self) -> list[tuple[float, str]]:
        found = [
            (self.out_of_band_after, "out_of_band"),
            (self.void_after, "void"),
            (self.uncollectible_after, "uncollectible"),
        ]
        return sorted((after, action) for after, action in found if after is not None)


@dataclass(frozen=True)
class Charge:
    """An invoice and its first, automatic charge attempt."""

    invoice_id: str
    kind: str  # renewal | upgrade
    at: float
    amount: int
    trouble: Trouble | None  # drawn: the charge fails this way if the card is fine then
    fate: Fate = field(default_factory=Fate)
    # If the first attempt fails: how its charge events reach the service (ON_TIME, LATE
    # by charge_event_delay seconds, or MISSING).
    charge_event: str = ON_TIME
    charge_event_delay: float = 0.0
    # An old invoice: the first event about it arrives this long after `at`. Both worlds
    # start handling it then; its fate is counted from then.
    first_seen_after: float | None = None

    @property
    def billing_reason(self) -> str:
        return "subscription_cycle" if self.kind == "renewal" else "subscription_update"

    @property
    def old(self) -> bool:
        return self.first_seen_after is not None

    @property
    def seen_at(self) -> float:
        """When the first event about the invoice arrives (a failure's events, if it fails)."""
        return self.at + (self.first_seen_after or 0.0)

    @property
    def uncollectible_upgrade(self) -> bool:
        return self.kind == "upgrade" and self.fate.uncollectible_after is not None


@dataclass(frozen=True)
class AccountTruth:
    index: int
    customer: str
    subscription: str
    plan: int  # minor units (USD) a month
    tenure_months: int  # paid months before the run
    charges: tuple[Charge, ...]  # in time order

    @property
    def paying_history(self) -> bool:
        return self.tenure_months >= PAYING_HISTORY_MONTHS

    @property
    def may_fail(self) -> bool:
        return any(charge.trouble is not None for charge in self.charges)

    @property
    def history(self) -> int:
        """Paid invoices replayed before the run for an account that may fail."""
        return min(self.tenure_months, HISTORY_REPLAYED) if self.may_fail else 0


@dataclass(frozen=True)
class Book:
    seed: int
    days: int
    mix: Mix
    accounts: tuple[AccountTruth, ...]
    outage: tuple[float, float]  # Account Management down from, until
    # Drawn last from the same Random(seed), and kept apart from the customers' draws so
    # that delivery noise (duplicates, delays, order) never changes who does what; each
    # account's noise is drawn from it and the account's index (`StripeSide.noise`).
    delivery_seed: int

    @property
    def end(self) -> float:
        return self.days * DAY


@dataclass
class Spell:
    trouble: Trouble
    start: float
    end: float | None
    card: int  # the card generation it was on

    def active(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass
class Card:
    """The card state of one account in one world: the spells started by its charges."""

    spells: list[Spell] = field(default_factory=list)
    generation: int = 0

    def active(self, t: float) -> Spell | None:
        for spell in self.spells:
            if spell.active(t):
                return spell
        return None

    def charge(self, charge: Charge, t: float) -> tuple[Spell | None, bool]:
        """The spell that declines this charge (None: it succeeds), and whether it is new."""
        spell = self.active(t)
        if spell is not None:
            return spell, False
        if charge.trouble is None:
            return None, False
        end = None if charge.trouble.ends_after is None else t + charge.trouble.ends_after
        spell = Spell(charge.trouble, t, end, self.generation)
        self.spells.append(spell)
        return spell, True

    def spell_ended(self, spell: Spell) -> None:
        """A new card (hard, fraud) is a new generation: network limits start again."""
        if spell.trouble.kind in ("hard", "fraud"):
            self.generation += 1
