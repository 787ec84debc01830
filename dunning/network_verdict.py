"""The earliest moment the card-network rules (`dunning.network_rules`) allow a
merchant-initiated retry of a card, and why. Pure.

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time

from dunning.network_rules import (
    CODE_MEANINGS,
    DEFAULT_NETWORK_RULES,
    AdviceWait,
    AttemptCap,
    CardAttempt,
    Network,
    NetworkRules,
    NetworkVerdict,
    NeverRetry,
    card_networks,
    human_span,
)


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
            f"limit of {cap.limit} in {human_span(cap.window)}",
            {
                "limit": cap.limit,
                "window": human_span(cap.window),
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
            f"advice {code}: retry after {human_span(spans[code])}",
            {wait.field: code, "declined_at": _iso(attempt.at), "wait": human_span(spans[code])},
        )


def _never_fired(
    rules: Sequence[NeverRetry], declines: Sequence[CardAttempt]
) -> tuple[NeverRetry, CardAttempt, str] | None:
    for attempt in sorted(declines, key=lambda a: a.at, reverse=True):  # most recent first
        for rule in rules:
            start = _start(rule.effective_from)
            code = _code(attempt, rule.field)
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
    attempts = [replace(a, at=_utc(a.at, "attempt time")) for a in attempts]
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
