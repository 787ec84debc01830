"""Card-network retry rules as data. Pure.

Every rule is a record: the network it belongs to, what it limits, its parameters, a short
citation of its source and the date it takes effect. Three kinds:

- `NeverRetry`: a decline carrying one of these codes means the card will never be approved;
  no merchant-initiated retry of that card, ever.
- `AttemptCap`: at most `limit` merchant-initiated attempts on the card in any sliding window.
- `AdviceWait`: a decline carrying one of these advice codes means "not before this long".

The earliest moment they allow a retry, and the choices made in reading them, are in
`dunning.network_verdict`.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum


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


def card_networks(brand: str) -> frozenset[Network]:
    """The networks whose rules bind this card: all of them when the brand is not known."""
    key = "".join(ch for ch in brand.lower() if ch.isalnum())
    if key in KNOWN_NETWORKS:
        return frozenset({Network.ANY, Network(key)})
    return frozenset(Network)


def human_span(span: timedelta) -> str:
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
            "window": human_span(cap.window),
            "window_seconds": int(cap.window.total_seconds()),
            "counts_customer_initiated": cap.counts_customer_initiated,
        }
        rows.append(_row(cap, "attempt_cap", params))
    for wait in rules.waits:
        params = {
            "wait_on": wait.field,
            "waits": {code: human_span(span) for code, span in wait.waits},
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
