"""What a run through the service saw besides the database, and the run's time axis: times
are seconds since START (day 0, 00:00 UTC), Stripe's timestamps whole seconds."""

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dunning.models import OPEN_STATES, BadDebtEpisode, DunningCase
from entitlements.models import Restriction
from simulation.book import Book
from simulation.ledger import Ledger

START = datetime(2027, 1, 4, tzinfo=UTC)  # a Monday, 00:00 UTC: day 0 of every run
START_TS = int(START.timestamp())
SECRET = "whsec_simulation_only"
LEVELS = ("notice", "upgrade_restricted", "premium_restricted", "read_only", "suspended")


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


def sample_day(run: ServiceRun, day: int) -> None:
    """The end of `day`: open cases by level, cancellations, bad debt in progress, and the
    account-days restricted (read from the stores, as a dashboard would)."""
    levels = Counter(
        DunningCase.objects.filter(state__in=OPEN_STATES).values_list("level", flat=True)
    )
    for level in LEVELS:
        run.levels[level][day - 1] = levels.get(level, 0)
    run.cancelled_by_day[day - 1] = DunningCase.objects.filter(resolution="cancelled").count()
    run.bad_debt_by_day[day - 1] = BadDebtEpisode.objects.filter(exited_at__isnull=True).count()
    restricted: dict[int, set[str]] = {}
    for customer, code in Restriction.objects.values_list("account__stripe_customer_id", "code"):
        restricted.setdefault(index_of(customer), set()).add(code)
    for index, codes in restricted.items():
        run.core_days_lost += "core_access" in codes
        if run.book.accounts[index].paying_history:
            run.restricted_days += 1
            run.beyond_upgrade_days += bool(codes - {"upgraded_features"})
            run.no_core_days += "core_access" in codes
