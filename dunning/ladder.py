"""The consequence level: a function of duration and severity. Pure.

Duration is the age of the earliest unpaid invoice. Severity stretches or shrinks the
ladder: a customer with a long paying history and no recent trouble gets more time, a
card declined as fraud gets less, and a small amount never costs more than premium
features.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from dunning.policy import LADDER_ORDER, DeclineClass, Level, Policy
from dunning.rules import Rule


@dataclass(frozen=True)
class PaymentHistory:
    paid_invoices: int  # ever paid, on any attempt
    recent_cases: int  # earlier dunning cases opened within the policy's memory


@dataclass(frozen=True)
class LadderDecision:
    level: Level
    next_review_at: datetime | None
    rule: Rule


def severity_factor(
    decline_class: DeclineClass, history: PaymentHistory, policy: Policy
) -> tuple[float, list[str]]:
    rules = policy.severity
    factor, why = 1.0, []
    if history.paid_invoices >= rules.good_payer_min_paid and history.recent_cases == 0:
        factor *= rules.good_payer_factor
        why.append(
            f"{history.paid_invoices} invoices paid and no dunning in "
            f"{rules.memory.days} days: ladder x{rules.good_payer_factor:g}"
        )
    if decline_class == DeclineClass.FRAUD:
        factor *= rules.fraud_factor
        why.append(f"fraud-type decline: ladder x{rules.fraud_factor:g}")
    return factor, why


def consequence_level(
    *,
    earliest_unpaid_at: datetime,
    now: datetime,
    decline_class: DeclineClass,
    overdue: dict[str, int],
    history: PaymentHistory,
    policy: Policy,
) -> LadderDecision:
    age = now - earliest_unpaid_at
    factor, why = severity_factor(decline_class, history, policy)
    cap = policy.severity.small_amount_cap
    small = all(amount <= policy.severity.small_amount_minor for amount in overdue.values())
    level, next_step, capped = Level.NONE, None, False
    for step in policy.ladder:
        # A small amount never costs more than the cap, but the ladder still ends (no limbo).
        if (
            small
            and step.level != Level.CANCELLED
            and LADDER_ORDER.index(step.level) > LADDER_ORDER.index(cap)
        ):
            capped = True
            continue
        at = earliest_unpaid_at + timedelta(seconds=step.after.total_seconds() * factor)
        if now >= at:
            level = step.level
        elif next_step is None:
            next_step = at
    if capped:
        why.append(
            f"small amount ({', '.join(f'{v} {c}' for c, v in sorted(overdue.items()))} "
            f"minor units): no further than {cap.value} before the end of the ladder"
        )
    conclusion = (
        f"level {level.value} because the earliest unpaid invoice is {age.days} days old "
        f"and the decline was {decline_class.value}"
    )
    if why:
        conclusion += f" ({'; '.join(why)})"
    return LadderDecision(
        level=level,
        next_review_at=next_step,
        rule=Rule(
            "ladder",
            conclusion,
            {
                "days_overdue": age.days,
                "decline_class": decline_class.value,
                "earliest_unpaid_at": earliest_unpaid_at.isoformat(),
                "severity_factor": factor,
                "paid_invoices": history.paid_invoices,
                "recent_cases": history.recent_cases,
                "amount_overdue": overdue,
            },
        ),
    )
