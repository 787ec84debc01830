"""Where on its ladder a case stands: a function of duration, severity and dwell. Pure.

Duration is the age of the earliest unpaid invoice of the track. Severity stretches or
shrinks when each rung starts: a customer with a long paying history and no recent trouble
gets more time, a card declined as fraud gets less. Dwell keeps the climb one rung at a
time: a case's first decision is at most the first rung, and no rung starts before the one
below has been in force for its minimum dwell, so a late event about an old invoice (or a
first day in production on an existing book) never jumps straight to suspension.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from dunning.policy import LADDER_ORDER, DeclineClass, Level, Policy, Rung, Track
from dunning.rules import Rule


@dataclass(frozen=True)
class PaymentHistory:
    # Ever paid, on any attempt; read up to the good-payer threshold and no further.
    paid_invoices: int
    recent_cases: int  # earlier dunning cases opened within the policy's memory


@dataclass(frozen=True)
class LadderDecision:
    rung: Rung
    since: datetime  # when this rung took (or takes) effect
    next_review_at: datetime | None
    rule: Rule
    next_level: Level | None = None  # the rung that starts at next_review_at


def severity_factor(
    decline_class: DeclineClass, history: PaymentHistory, policy: Policy
) -> tuple[float, list[str]]:
    rules = policy.severity
    factor, why = 1.0, []
    if history.paid_invoices >= rules.good_payer_min_paid and history.recent_cases == 0:
        factor *= rules.good_payer_factor
        why.append(
            f"at least {rules.good_payer_min_paid} invoices paid and no dunning in "
            f"{rules.memory.days} days: ladder x{rules.good_payer_factor:g}"
        )
    if decline_class == DeclineClass.FRAUD:
        factor *= rules.fraud_factor
        why.append(f"fraud-type decline: ladder x{rules.fraud_factor:g}")
    return factor, why


def rung_by_age(
    rungs: tuple[Rung, ...], *, start: datetime, now: datetime, factor: float
) -> tuple[int, datetime | None]:
    """The highest rung whose (scaled) start has passed, and when the next one starts."""
    reached, next_at = 0, None
    for index, rung in enumerate(rungs):
        at = start + timedelta(seconds=rung.starts_after.total_seconds() * factor)
        if now >= at:
            reached = index
        else:
            next_at = at
            break
    return reached, next_at


def held_rung(rungs: tuple[Rung, ...], level: str) -> int | None:
    """Where the current level sits on this track: its own rung, or the highest rung of
    the track not above it (a case that changed track). None: not on any rung yet."""
    if level not in LADDER_ORDER or Level(level) == Level.NONE:
        return None
    order = LADDER_ORDER.index(Level(level))
    below = [i for i, rung in enumerate(rungs) if LADDER_ORDER.index(rung.level) <= order]
    return below[-1] if below else None


def climb(
    *,
    track: Track,
    start: datetime,
    now: datetime,
    current_level: str,
    current_since: datetime | None,
    factor: float,
    floor: Level = Level.NONE,
    policy: Policy,
) -> tuple[int, datetime, datetime | None, int]:
    """(rung index, since, next review, rung index by age alone) on `track`."""
    rungs = policy.ladders[track]
    target, next_at = rung_by_age(rungs, start=start, now=now, factor=factor)
    floor_index = held_rung(rungs, floor.value)
    if floor_index is not None and floor_index > target:
        # Held up to the floor already; the rung after it still starts by age (no limbo).
        target = floor_index
        later = rungs[floor_index + 1 :]
        next_at = (
            start + timedelta(seconds=later[0].starts_after.total_seconds() * factor)
            if later
            else None
        )
    held = held_rung(rungs, current_level)
    if held is None:
        index, since = 0, now  # a first decision is at most the first rung
    elif rungs[held].level != current_level:
        index, since = held, now  # moved onto this track: its nearest rung starts now
    else:
        index, since = held, current_since or now
    if target < index:
        index, since = target, now  # consequences come down at once
    elif target > index and now >= since + rungs[index].min_dwell and held is not None:
        index, since = index + 1, now
    if target > index:
        next_review = since + rungs[index].min_dwell
    else:
        next_review = max(next_at, since + rungs[index].min_dwell) if next_at else None
    return index, since, next_review, target


def consequence_level(
    *,
    track: Track,
    start: datetime,
    now: datetime,
    decline_class: DeclineClass,
    history: PaymentHistory,
    current_level: str,
    current_since: datetime | None,
    floor: Level = Level.NONE,
    policy: Policy,
) -> LadderDecision:
    factor, why = severity_factor(decline_class, history, policy)
    index, since, next_review, target = climb(
        track=track,
        start=start,
        now=now,
        current_level=current_level,
        current_since=current_since,
        factor=factor,
        floor=floor,
        policy=policy,
    )
    rungs = policy.ladders[track]
    rung = rungs[index]
    age = now - start
    conclusion = (
        f"level {rung.level.value} on the {track.value} ladder: the earliest unpaid invoice "
        f"is {age.days} days old and the decline was {decline_class.value}"
    )
    if why:
        conclusion += f" ({'; '.join(why)})"
    if target > index:
        conclusion += (
            f"; {rungs[target].level.value} is due, but {rung.level.value} holds at least "
            f"{describe_days(rung.min_dwell)} first (one rung at a time)"
        )
    return LadderDecision(
        rung=rung,
        since=since,
        next_review_at=next_review,
        next_level=rungs[index + 1].level if index + 1 < len(rungs) else None,
        rule=Rule(
            "ladder",
            conclusion,
            {
                "track": track.value,
                "days_overdue": age.days,
                "decline_class": decline_class.value,
                "earliest_unpaid_at": start.isoformat(),
                "severity_factor": factor,
                "paid_invoices": history.paid_invoices,
                "recent_cases": history.recent_cases,
                "due_by_age": rungs[target].level.value,
                "level_since": since.isoformat(),
            },
        ),
    )


def describe_days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} day{'s' if days != 1 else ''}"
