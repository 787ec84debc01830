"""Card-network retry rules as data, and the earliest moment they allow a retry. Pure.

Every rule is a record: the network it belongs to, what it limits, its parameters, a short
citation of its source and the date it takes effect. Three kinds:

- `NeverRetry`: a decline carrying one of these codes means the card will never be approved;
  no merchant-initiated retry of that card, ever.
- `AttemptCap`: at most `limit` merchant-initiated attempts on the card in any sliding window.
- `AdviceWait`: a decline carrying one of these advice codes means "not before this long".

Choices worth knowing (support and the lead rely on them):

- A card whose network is not Visa or Mastercard (brand "" or any other) gets every rule of
  every network, so it can never be allowed sooner or more often than a known brand.
- Every decline's advice wait still applies, not only the latest decline's: a later decline
  without advice (or with a shorter wait) does not erase what the issuer asked for earlier,
  and an added attempt can then never bring a retry forward. Waits are at most 10 days, so an
  old one expires by itself.
- A never-rule fires on any decline of the card the caller passes, however old. The caller
  decides which attempts belong to "this card" (a replaced card is a new card).
- A cap counts merchant-initiated attempts (declined or not). An attempt on the card that
  lies after the asked time (one already planned for another invoice) counts too: a retry at t
  must keep every window that contains t within the cap, not only the window ending at t.
- `effective_from` is a UTC date: a code rule applies to declines dated on or after it, a cap
  to retries at or after it. None means in force for every date this service handles (the
  sources give no start date that matters today).
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache


class Network(StrEnum):
    ANY = "any"  # applies to every card (Stripe's own advice)
    VISA = "visa"
    MASTERCARD = "mastercard"


KNOWN_NETWORKS = frozenset({Network.VISA, Network.MASTERCARD})


@dataclass(frozen=True)
class NeverRetry:
    name: str
    network: Network
    field: str  # the CardAttempt field that carries the code
    codes: frozenset[str]
    source: str
    effective_from: date | None = None


@dataclass(frozen=True)
class AttemptCap:
    name: str  # also the override key, e.g. "visa_30d"
    network: Network
    limit: int  # in force (a deployer may lower it)
    published_limit: int  # the network's own limit: no override may exceed it
    window: timedelta
    source: str
    effective_from: date | None = None
    counts_customer_initiated: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= self.published_limit:
            raise ValueError(
                f"network cap {self.name}: limit {self.limit} outside 1..{self.published_limit}"
            )


@dataclass(frozen=True)
class AdviceWait:
    name: str
    network: Network
    field: str
    waits: tuple[tuple[str, timedelta], ...]  # (code, wait from that decline)
    source: str
    effective_from: date | None = None


@dataclass(frozen=True)
class CardAttempt:
    """One attempt on the card, any invoice."""

    at: datetime  # aware UTC
    declined: bool
    customer_initiated: bool = False
    decline_code: str = ""
    advice_code: str = ""
    network_advice_code: str = ""
    network_decline_code: str = ""


@dataclass(frozen=True)
class NetworkVerdict:
    allowed: bool  # False: never on this card
    earliest: datetime | None  # earliest moment >= the asked time that every rule allows
    rule: str  # the rule that decided, "" when nothing constrained the asked time
    reason: str  # one plain sentence for support
    source: str
    facts: dict  # JSON-safe


@dataclass(frozen=True)
class NetworkRules:
    never: tuple[NeverRetry, ...]
    caps: tuple[AttemptCap, ...]
    waits: tuple[AdviceWait, ...]

    def with_overrides(self, overrides: Mapping[str, int]) -> "NetworkRules":
        """Stricter caps by name ({"visa_30d": 15}); a looser or unknown one is a ValueError."""
        by_name = {cap.name: cap for cap in self.caps}
        unknown = sorted(set(overrides) - set(by_name))
        if unknown:
            raise ValueError(f"unknown network cap(s) {unknown}; known: {sorted(by_name)}")
        for name, value in overrides.items():
            cap = by_name[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"network cap {name} must be an integer, got {value!r}")
            if not 1 <= value <= cap.published_limit:
                raise ValueError(
                    f"network cap {name} must be between 1 and {cap.published_limit} "
                    f"(the network's limit), got {value}"
                )
            by_name[name] = replace(cap, limit=value)
        return replace(self, caps=tuple(by_name[cap.name] for cap in self.caps))


CODE_MEANINGS = {
    ("network_advice_code", "03"): "do not try again",
    ("network_advice_code", "21"): "payment cancellation",
    ("advice_code", "do_not_try_again"): "do not try again",
}

_VISA_CATEGORY_1 = "Visa Rules: decline response code category 1, issuer will never approve"
_MAC = "Mastercard Merchant Advice Codes (Transaction Processing Excellence)"

DEFAULT_NETWORK_RULES = NetworkRules(
    never=(
        NeverRetry(
            "stripe_do_not_try_again",
            Network.ANY,
            "advice_code",
            frozenset({"do_not_try_again"}),
            "Stripe docs, Decline codes: advice_code do_not_try_again",
        ),
        NeverRetry(
            "visa_category_1",
            Network.VISA,
            "network_decline_code",
            frozenset({"04", "07", "12", "14", "15", "41", "43", "46", "R0", "R1", "R3"}),
            _VISA_CATEGORY_1,
        ),
        NeverRetry(
            "visa_category_1_code_57",
            Network.VISA,
            "network_decline_code",
            frozenset({"57"}),
            f"{_VISA_CATEGORY_1}: code 57 joins category 1 on 2026-10-25",
            effective_from=date(2026, 10, 25),
        ),
        NeverRetry(
            "mastercard_mac_never",
            Network.MASTERCARD,
            "network_advice_code",
            frozenset({"03", "21"}),
            f"{_MAC}: 03 do not try again, 21 payment cancellation",
        ),
    ),
    caps=(
        AttemptCap(
            "visa_30d",
            Network.VISA,
            limit=20,
            published_limit=20,
            window=timedelta(days=30),
            source="Visa Rules, excessive reattempts: categories 2-4, at most 20 per card in "
            "30 days since 2025 (15 before), customer-initiated counted apart",
        ),
        AttemptCap(
            "mastercard_24h",
            Network.MASTERCARD,
            limit=10,
            published_limit=10,
            window=timedelta(hours=24),
            source="Mastercard Transaction Processing Excellence, excessive attempts: "
            "10 per card in 24 hours",
        ),
        AttemptCap(
            "mastercard_30d",
            Network.MASTERCARD,
            limit=35,
            published_limit=35,
            window=timedelta(days=30),
            source="Mastercard Transaction Processing Excellence, excessive attempts: "
            "35 per card in 30 days",
        ),
    ),
    waits=(
        AdviceWait(
            "mastercard_mac_retry_after",
            Network.MASTERCARD,
            "network_advice_code",
            (
                ("24", timedelta(hours=1)),
                ("25", timedelta(hours=24)),
                ("26", timedelta(days=2)),
                ("27", timedelta(days=4)),
                ("28", timedelta(days=6)),
                ("29", timedelta(days=8)),
                ("30", timedelta(days=10)),
            ),
            f"{_MAC}: 24-30 retry after 1 hour, 24 hours, 2, 4, 6, 8, 10 days",
        ),
    ),
)


def network_rules_from_json(text: str) -> NetworkRules:
    """Stricter caps from an environment variable: a JSON object of cap name to limit."""
    if not text or not text.strip():
        return DEFAULT_NETWORK_RULES
    overrides = json.loads(text)
    if not isinstance(overrides, dict):
        raise ValueError(f"network rule overrides must be a JSON object, got {text!r}")
    return DEFAULT_NETWORK_RULES.with_overrides(overrides)


@cache  # a handful of brands; asked once per retry planned
def card_networks(brand: str) -> frozenset[Network]:
    """The networks whose rules bind this card: all of them when the brand is not known."""
    key = "".join(ch for ch in brand.lower() if ch.isalnum())
    if key in KNOWN_NETWORKS:
        return frozenset({Network.ANY, Network(key)})
    return frozenset(Network)


def _human(span: timedelta) -> str:
    if span >= timedelta(days=2) and span % timedelta(days=1) == timedelta(0):
        days = span // timedelta(days=1)
        return f"{days} day" if days == 1 else f"{days} days"
    hours = span // timedelta(hours=1)
    return f"{hours} hour" if hours == 1 else f"{hours} hours"


def describe_rules(rules: NetworkRules = DEFAULT_NETWORK_RULES) -> list[dict]:
    """The rules as a table (JSON-safe), for the README and the API."""
    rows: list[dict] = []
    for rule in rules.never:
        params = {"never_retry_on": rule.field, "codes": sorted(rule.codes)}
        rows.append(_row(rule, "never_retry", params))
    for cap in rules.caps:
        params = {
            "limit": cap.limit,
            "published_limit": cap.published_limit,
            "window": _human(cap.window),
            "window_seconds": int(cap.window.total_seconds()),
            "counts_customer_initiated": cap.counts_customer_initiated,
        }
        rows.append(_row(cap, "attempt_cap", params))
    for wait in rules.waits:
        params = {
            "wait_on": wait.field,
            "waits": {code: _human(span) for code, span in wait.waits},
            "wait_seconds": {code: int(span.total_seconds()) for code, span in wait.waits},
        }
        rows.append(_row(wait, "retry_after", params))
    return rows


def _row(rule: NeverRetry | AttemptCap | AdviceWait, kind: str, params: dict) -> dict:
    return {
        "network": rule.network.value,
        "rule": rule.name,
        "kind": kind,
        "params": params,
        "source": rule.source,
        "effective_from": rule.effective_from.isoformat() if rule.effective_from else None,
    }


def _start(day: date | None) -> datetime | None:
    return datetime.combine(day, time(0), tzinfo=UTC) if day else None


def _code(attempt: CardAttempt, field: str) -> str:
    value = getattr(attempt, field).strip()
    return value.lower() if field == "advice_code" else value.upper()


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class _Hold:
    """Retries at t are refused while lo < t < hi (lo <= t when lo_closed; no lo: any t < hi)."""

    hi: datetime
    lo: datetime | None
    lo_closed: bool
    rule: AttemptCap | AdviceWait
    reason: str
    facts: dict

    def holds(self, t: datetime) -> bool:
        if t >= self.hi:
            return False
        if self.lo is None:
            return True
        return self.lo <= t if self.lo_closed else self.lo < t


def _cap_holds(cap: AttemptCap, attempts: Sequence[CardAttempt], not_before: datetime):
    # Any cap-sized run of consecutive counted attempts spanning less than a window forbids
    # every t with some window (s - W, s], s in [t, t + W), covering the whole run.
    horizon = not_before - cap.window  # runs starting at or before it free t >= not_before
    times = sorted(
        a.at
        for a in attempts
        if (cap.counts_customer_initiated or not a.customer_initiated) and a.at > horizon
    )
    start = _start(cap.effective_from)
    kind = "attempts" if cap.counts_customer_initiated else "merchant-initiated attempts"
    for first, last in zip(times, times[cap.limit - 1 :], strict=False):
        if last - first >= cap.window:
            continue
        hi, lo, lo_closed = first + cap.window, last - cap.window, False
        if start is not None:
            if start >= hi:
                continue
            if start > lo:
                lo, lo_closed = start, True
        yield _Hold(
            hi,
            lo,
            lo_closed,
            cap,
            f"the card already had {cap.limit} {kind} between "
            f"{first:%Y-%m-%d %H:%M} and {last:%Y-%m-%d %H:%M} UTC, the {cap.network.title()} "
            f"limit of {cap.limit} in {_human(cap.window)}",
            {
                "limit": cap.limit,
                "window": _human(cap.window),
                "run_first_at": _iso(first),
                "run_last_at": _iso(last),
            },
        )


def _wait_holds(wait: AdviceWait, declines: Iterable[CardAttempt]):
    start = _start(wait.effective_from)
    spans = dict(wait.waits)
    for attempt in declines:
        code = _code(attempt, wait.field)
        if code not in spans or (start is not None and attempt.at < start):
            continue
        yield _Hold(
            attempt.at + spans[code],
            None,
            False,
            wait,
            f"the decline of {attempt.at:%Y-%m-%d %H:%M} UTC carried {wait.network.title()} "
            f"advice {code}: retry after {_human(spans[code])}",
            {wait.field: code, "declined_at": _iso(attempt.at), "wait": _human(spans[code])},
        )


def _never_fired(
    rules: Sequence[NeverRetry], declines: Sequence[CardAttempt]
) -> tuple[NeverRetry, CardAttempt, str] | None:
    starts = [(rule, _start(rule.effective_from)) for rule in rules]  # once, not per decline
    for attempt in sorted(declines, key=lambda a: a.at, reverse=True):  # most recent first
        codes: dict[str, str] = {}  # several rules read the same field
        for rule, start in starts:
            if (code := codes.get(rule.field)) is None:
                code = codes[rule.field] = _code(attempt, rule.field)
            if code in rule.codes and (start is None or attempt.at >= start):
                return rule, attempt, code
    return None


def _counts(caps: Sequence[AttemptCap], attempts: Sequence[CardAttempt], at: datetime) -> dict:
    return {
        cap.name: sum(
            1
            for a in attempts
            if (cap.counts_customer_initiated or not a.customer_initiated)
            and at - cap.window < a.at <= at
        )
        for cap in caps
    }


def earliest_retry(
    *,
    brand: str,
    attempts: Sequence[CardAttempt],
    not_before: datetime,
    rules: NetworkRules = DEFAULT_NETWORK_RULES,
) -> NetworkVerdict:
    """The earliest merchant-initiated retry of this card at or after `not_before` that every
    card-network rule allows, or allowed=False when a never-retry rule fired."""
    not_before = _utc(not_before, "not_before")
    # Already UTC (as the database gives them): no copy, the drift scan does this per candidate.
    attempts = [
        a if a.at.tzinfo is UTC else replace(a, at=_utc(a.at, "attempt time")) for a in attempts
    ]
    networks = card_networks(brand)
    declines = [a for a in attempts if a.declined]
    base = {
        "brand": brand,
        "networks": sorted(n.value for n in networks if n != Network.ANY),
        "not_before": _iso(not_before),
        "attempts": len(attempts),
    }

    fired = _never_fired([r for r in rules.never if r.network in networks], declines)
    if fired:
        rule, attempt, code = fired
        meaning = CODE_MEANINGS.get(
            (rule.field, code), "Visa category 1: issuer will never approve"
        )
        return NetworkVerdict(
            allowed=False,
            earliest=None,
            rule=rule.name,
            reason=f"Never retry this card: the decline of {attempt.at:%Y-%m-%d %H:%M} UTC "
            f"carried {rule.field} {code} ({meaning}).",
            source=rule.source,
            facts={
                **base,
                rule.field: code,
                "declined_at": _iso(attempt.at),
                "effective_from": rule.effective_from.isoformat() if rule.effective_from else None,
            },
        )

    caps = [c for c in rules.caps if c.network in networks]
    holds = [h for cap in caps for h in _cap_holds(cap, attempts, not_before)]
    holds += [h for w in rules.waits if w.network in networks for h in _wait_holds(w, declines)]

    # Each move lands on the end of a hold, so this ends after at most len(holds) passes.
    at, decider = not_before, None
    moved = True
    while moved:
        moved = False
        for hold in holds:
            if hold.holds(at):
                at, decider, moved = hold.hi, hold, True

    facts = {**base, "earliest": _iso(at), "counted_in_window": _counts(caps, attempts, at)}
    if decider is None:
        return NetworkVerdict(
            True,
            at,
            "",
            f"No card-network rule holds back a retry at {at:%Y-%m-%d %H:%M} UTC.",
            "",
            facts,
        )
    return NetworkVerdict(
        True,
        at,
        decider.rule.name,
        f"Retry no earlier than {at:%Y-%m-%d %H:%M:%S} UTC: {decider.reason}.",
        decider.rule.source,
        {**facts, **decider.facts},
    )
