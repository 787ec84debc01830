"""Dunning policy as data: decline classes and the consequence ladder.

Loaded once per process. The version string is stored on every decision, so support
can see which policy made it.
"""

import csv
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path

DECLINE_CODES_CSV = Path(__file__).resolve().parent / "policy_data" / "decline_codes.csv"


class DeclineClass(StrEnum):
    SOFT = "soft"  # transient: a later retry of the same card may succeed
    HARD = "hard"  # the customer must act: new card, corrected details, issuer
    FRAUD = "fraud"  # never retry, never tell the customer the specific reason
    AUTH_REQUIRED = "auth_required"  # needs the customer on-session


class Level(StrEnum):
    """The consequence ladder, mildest first."""

    NONE = "none"
    NOTICE = "notice"
    UPGRADE_RESTRICTED = "upgrade_restricted"  # only the unpaid upgrade is held back
    PREMIUM_RESTRICTED = "premium_restricted"  # core access kept
    READ_ONLY = "read_only"
    SUSPENDED = "suspended"  # bad debt
    CANCELLED = "cancelled"


LADDER_ORDER = list(Level)


@dataclass(frozen=True)
class LadderStep:
    level: Level
    after: timedelta  # time since the earliest unpaid invoice


@dataclass(frozen=True)
class RetryRules:
    """When to retry a declined invoice off-session, within card-network rules."""

    # Retry offsets from the invoice's first failure, by decline class. Hard, fraud and
    # authentication-required declines have none: they wait for the customer.
    schedules: dict[str, tuple[timedelta, ...]]
    # Never retry sooner than this after the previous attempt.
    min_gap: timedelta = timedelta(hours=12)
    # Visa: at most 15 reattempts of a card in 30 days.
    card_attempt_cap: int = 15
    card_attempt_window: timedelta = timedelta(days=30)
    # Network advice that the issuer will never approve this card: stop retrying it.
    # Mastercard merchant advice code 03; Visa category 1 decline codes.
    stop_network_advice_codes: frozenset[str] = frozenset({"03"})
    stop_network_decline_codes: frozenset[str] = frozenset(
        {"04", "07", "12", "14", "15", "41", "43", "46", "57", "R0", "R1", "R3"}
    )


@dataclass(frozen=True)
class SeverityRules:
    """How severity stretches the ladder (a factor on every step's delay)."""

    good_payer_min_paid: int = 6
    good_payer_factor: float = 2.0
    fraud_factor: float = 0.5
    # How far back an earlier dunning case counts against "good payer".
    memory: timedelta = timedelta(days=365)
    # At or under this amount (minor units, in every currency owed), go no further than:
    small_amount_minor: int = 500
    small_amount_cap: Level = Level.PREMIUM_RESTRICTED


@dataclass(frozen=True)
class Policy:
    version: str
    decline_classes: dict[str, DeclineClass]
    unknown_decline_class: DeclineClass
    ladder: tuple[LadderStep, ...]
    retries: RetryRules
    severity: SeverityRules = field(default_factory=SeverityRules)
    # Standing sent to Account Management for each level.
    standing: dict[Level, str] = field(default_factory=dict)

    def classify(self, decline_code: str) -> DeclineClass:
        return self.decline_classes.get(decline_code, self.unknown_decline_class)

    def retry_schedule(
        self, decline_code: str, decline_class: DeclineClass
    ) -> tuple[timedelta, ...]:
        if decline_code and decline_code not in self.decline_classes:
            return self.retries.schedules.get("unknown", ())
        return self.retries.schedules.get(decline_class, ())


def load_decline_classes(path: Path = DECLINE_CODES_CSV) -> dict[str, DeclineClass]:
    with path.open(newline="") as handle:
        return {row["decline_code"]: DeclineClass(row["class"]) for row in csv.DictReader(handle)}


DEFAULT_LADDER = (
    LadderStep(Level.NOTICE, timedelta(0)),
    LadderStep(Level.PREMIUM_RESTRICTED, timedelta(days=7)),
    LadderStep(Level.READ_ONLY, timedelta(days=14)),
    LadderStep(Level.SUSPENDED, timedelta(days=30)),
    # The end of the ladder: the subscription is cancelled through its lifecycle.
    LadderStep(Level.CANCELLED, timedelta(days=45)),
)


def _days(*offsets: float) -> tuple[timedelta, ...]:
    return tuple(timedelta(days=offset) for offset in offsets)


# Soft declines: seven retries over about three weeks, spaced out (funds tend to arrive
# around paydays; issuers penalise rapid re-tries). Unknown codes: a shortened schedule.
DEFAULT_RETRIES = RetryRules(
    schedules={
        DeclineClass.SOFT: _days(1, 3, 5, 8, 12, 17, 23),
        "unknown": _days(1, 4, 9),
    }
)

DEFAULT_STANDING = {
    Level.NONE: "good",
    Level.NOTICE: "good",
    Level.UPGRADE_RESTRICTED: "good",
    Level.PREMIUM_RESTRICTED: "past_due",
    Level.READ_ONLY: "restricted",
    Level.SUSPENDED: "suspended",
    Level.CANCELLED: "cancelled",
}


@cache
def current_policy() -> Policy:
    """The policy in force. DUNNING_DECLINE_CLASS_OVERRIDES is a JSON object of
    decline code to class (e.g. {"do_not_honor": "hard"}) applied over the CSV."""
    classes = load_decline_classes()
    overrides = json.loads(os.environ.get("DUNNING_DECLINE_CLASS_OVERRIDES", "{}") or "{}")
    classes.update({code: DeclineClass(value) for code, value in overrides.items()})
    return Policy(
        version="2026-11-v2",
        decline_classes=classes,
        unknown_decline_class=DeclineClass(
            os.environ.get("DUNNING_UNKNOWN_DECLINE_CLASS", DeclineClass.SOFT)
        ),
        ladder=DEFAULT_LADDER,
        retries=DEFAULT_RETRIES,
        standing=DEFAULT_STANDING,
    )
