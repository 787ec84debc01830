"""Dunning policy as data: decline classes, retry schedules and the consequence ladder.

Loaded once per process. The version string is stored on every decision, so support
can see which policy made it. The ladder is one table of `Rung`s per track: everything
about a level (when it starts, how long it holds at least, the standing sent to Account
Management, what it restricts, whether it is bad debt, what it ends with) in one row.
"""

import csv
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path

from entitlements.policy import CORE_ACCESS, PREMIUM_FEATURES, UPGRADED_FEATURES, WRITE_ACCESS

DECLINE_CODES_CSV = Path(__file__).resolve().parent / "policy_data" / "decline_codes.csv"


class DeclineClass(StrEnum):
    SOFT = "soft"  # transient: a later retry of the same card may succeed
    HARD = "hard"  # the customer must act: new card, corrected details, issuer
    FRAUD = "fraud"  # never retry, never tell the customer the specific reason
    AUTH_REQUIRED = "auth_required"  # needs the customer on-session


# Worst first: the class a case shows when its card saw several kinds of decline.
CLASS_SEVERITY = (
    DeclineClass.FRAUD,
    DeclineClass.HARD,
    DeclineClass.AUTH_REQUIRED,
    DeclineClass.SOFT,
)


class Level(StrEnum):
    """The consequence levels, mildest first (the order support holds compare by)."""

    NONE = "none"
    NOTICE = "notice"
    UPGRADE_RESTRICTED = "upgrade_restricted"  # only the unpaid upgrade is held back
    UPGRADE_REVERTED = "upgrade_reverted"  # the end of an unpaid upgrade: back to the base plan
    PREMIUM_RESTRICTED = "premium_restricted"  # core access kept
    READ_ONLY = "read_only"
    SUSPENDED = "suspended"  # bad debt
    CANCELLED = "cancelled"


LADDER_ORDER = list(Level)


class Track(StrEnum):
    """Which ladder a case climbs: chosen from what is unpaid."""

    BASE = "base"  # the base plan is unpaid
    SMALL_AMOUNT = "small_amount"  # every amount owed is small: never past premium features
    UPGRADE = "upgrade"  # only upgrade/proration invoices are unpaid: only the upgrade is touched


@dataclass(frozen=True)
class Rung:
    level: Level
    starts_after: timedelta  # since the earliest unpaid invoice, scaled by severity
    min_dwell: timedelta  # in force at least this long before the next rung may start
    standing: str  # sent to Account Management
    restricts: frozenset[str] = frozenset()  # entitlement codes taken away
    bad_debt: bool = False  # the account is in bad debt on this rung (case escalated)
    cancels: bool = False  # the end: the subscription is cancelled through its lifecycle
    reverts_upgrade: bool = False  # the end: the upgrade is reverted and its invoice voided


PREMIUM = frozenset({PREMIUM_FEATURES})
READ_ONLY = frozenset({PREMIUM_FEATURES, WRITE_ACCESS})
EVERYTHING = frozenset({PREMIUM_FEATURES, WRITE_ACCESS, CORE_ACCESS})


def _d(days: float) -> timedelta:
    return timedelta(days=days)


NOTICE = Rung(Level.NOTICE, _d(0), _d(3), "good")
CANCELLED = Rung(Level.CANCELLED, _d(45), _d(0), "cancelled", EVERYTHING, True, cancels=True)

DEFAULT_LADDERS: dict[Track, tuple[Rung, ...]] = {
    Track.BASE: (
        NOTICE,
        Rung(Level.PREMIUM_RESTRICTED, _d(7), _d(3), "past_due", PREMIUM),
        Rung(Level.READ_ONLY, _d(14), _d(7), "restricted", READ_ONLY),
        Rung(Level.SUSPENDED, _d(30), _d(7), "suspended", EVERYTHING, bad_debt=True),
        CANCELLED,
    ),
    # A small amount never costs more than premium features, but the ladder still ends.
    Track.SMALL_AMOUNT: (
        NOTICE,
        Rung(Level.PREMIUM_RESTRICTED, _d(7), _d(3), "past_due", PREMIUM),
        CANCELLED,
    ),
    # An unpaid upgrade with the base plan paid: never bad debt, never core access, never a
    # cancellation; it ends with the upgrade reverted and its invoice voided.
    Track.UPGRADE: (
        NOTICE,
        Rung(Level.UPGRADE_RESTRICTED, _d(3), _d(7), "good", frozenset({UPGRADED_FEATURES})),
        Rung(
            Level.UPGRADE_REVERTED,
            _d(30),
            _d(0),
            "good",
            frozenset({UPGRADED_FEATURES}),
            reverts_upgrade=True,
        ),
    ),
}


@dataclass(frozen=True)
class RetryRules:
    """When to retry a declined invoice off-session. The card networks' own limits live in
    `dunning.network_rules` and bound every retry."""

    # Retry offsets from the invoice's first failure, by decline class. Hard, fraud and
    # authentication-required declines have none: they wait for the customer.
    schedules: dict[str, tuple[timedelta, ...]]
    # Never retry sooner than this after the previous attempt.
    min_gap: timedelta = timedelta(hours=12)
    # Attempts on a card are read back this far (the longest network window).
    card_attempt_window: timedelta = timedelta(days=30)
    # A failure whose decline code is not known yet: look it up at Stripe, wait for the
    # charge event at most this long, then plan as an unknown code.
    unknown_class_wait: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class SeverityRules:
    """How severity stretches the ladder (a factor on every rung's start)."""

    good_payer_min_paid: int = 6
    good_payer_factor: float = 2.0
    fraud_factor: float = 0.5
    # How far back an earlier dunning case counts against "good payer".
    memory: timedelta = timedelta(days=365)
    # At or under this amount (minor units, in every currency owed): the small-amount track.
    small_amount_minor: int = 500


@dataclass(frozen=True)
class NoticeRules:
    """When the customer hears of a consequence before it takes effect."""

    step_lead: timedelta = timedelta(days=3)  # a ladder step: this long before it
    final_lead: timedelta = timedelta(days=7)  # the cancellation: this long before it
    # Before the card's expiry month ends (Stripe says so at the month's start).
    card_expiry_leads: tuple[timedelta, ...] = (timedelta(days=14), timedelta(days=3))


@dataclass(frozen=True)
class Policy:
    version: str
    decline_classes: dict[str, DeclineClass]
    unknown_decline_class: DeclineClass
    ladders: dict[Track, tuple[Rung, ...]]
    retries: RetryRules
    severity: SeverityRules = field(default_factory=SeverityRules)
    network_rules: object = None  # dunning.network_rules.NetworkRules; None: the defaults
    notices: NoticeRules = field(default_factory=NoticeRules)

    def classify(self, decline_code: str) -> DeclineClass:
        return self.decline_classes.get(decline_code, self.unknown_decline_class)

    def retry_schedule(
        self, decline_code: str, decline_class: DeclineClass
    ) -> tuple[timedelta, ...]:
        if decline_code and decline_code not in self.decline_classes:
            return self.retries.schedules.get("unknown", ())
        return self.retries.schedules.get(decline_class, ())

    def rung(self, level: Level) -> Rung:
        """The rung of a level (levels mean the same on every track they appear on)."""
        for rungs in self.ladders.values():
            for rung in rungs:
                if rung.level == level:
                    return rung
        return Rung(Level.NONE, _d(0), _d(0), "good")


def load_decline_classes(path: Path = DECLINE_CODES_CSV) -> dict[str, DeclineClass]:
    with path.open(newline="") as handle:
        return {row["decline_code"]: DeclineClass(row["class"]) for row in csv.DictReader(handle)}


# Soft declines: seven retries over about three weeks, spaced out (funds tend to arrive
# around paydays; issuers penalise rapid re-tries). Unknown codes: a shortened schedule.
DEFAULT_RETRIES = RetryRules(
    schedules={
        DeclineClass.SOFT: tuple(_d(day) for day in (1, 3, 5, 8, 12, 17, 23)),
        "unknown": tuple(_d(day) for day in (1, 4, 9)),
    }
)


@cache
def current_policy() -> Policy:
    """The policy in force. DUNNING_DECLINE_CLASS_OVERRIDES is a JSON object of
    decline code to class (e.g. {"do_not_honor": "hard"}) applied over the CSV;
    DUNNING_NETWORK_RULES a JSON object of stricter network caps."""
    from dunning.network_rules import DEFAULT_NETWORK_RULES, network_rules_from_json

    classes = load_decline_classes()
    overrides = json.loads(os.environ.get("DUNNING_DECLINE_CLASS_OVERRIDES", "{}") or "{}")
    classes.update({code: DeclineClass(value) for code, value in overrides.items()})
    network = os.environ.get("DUNNING_NETWORK_RULES", "")
    return Policy(
        version="2026-11-v4",
        decline_classes=classes,
        unknown_decline_class=DeclineClass(
            os.environ.get("DUNNING_UNKNOWN_DECLINE_CLASS", DeclineClass.SOFT)
        ),
        ladders=DEFAULT_LADDERS,
        retries=DEFAULT_RETRIES,
        network_rules=network_rules_from_json(network) if network else DEFAULT_NETWORK_RULES,
        notices=notice_rules_from_env(os.environ),
    )


def notice_rules_from_env(env: dict[str, str]) -> NoticeRules:
    """DUNNING_NOTICE_LEAD_DAYS, DUNNING_FINAL_NOTICE_LEAD_DAYS and
    DUNNING_CARD_EXPIRY_NOTICE_DAYS ("14,3") over the defaults."""
    defaults = NoticeRules()
    step = env.get("DUNNING_NOTICE_LEAD_DAYS", "")
    final = env.get("DUNNING_FINAL_NOTICE_LEAD_DAYS", "")
    card = env.get("DUNNING_CARD_EXPIRY_NOTICE_DAYS", "")
    return NoticeRules(
        step_lead=_d(float(step)) if step else defaults.step_lead,
        final_lead=_d(float(final)) if final else defaults.final_lead,
        card_expiry_leads=tuple(
            sorted((_d(float(day)) for day in card.split(",") if day.strip()), reverse=True)
        )
        if card
        else defaults.card_expiry_leads,
    )
