"""When to retry a declined invoice: by decline class, within card-network rules. Pure.

Every path to a charge goes through the same checks, in this order, with no exception:
the decline code must be known; a fraud, hard or authentication decline on the card the
retry would use stops retries on it (until the customer changes or updates it); the card
networks' rules (never-retry codes, caps per card across invoices, wait codes) bound the
time of any retry, including the one a card update asks for.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunning.network_rules import DEFAULT_NETWORK_RULES, CardAttempt
from dunning.network_verdict import earliest_retry
from dunning.policy import CLASS_SEVERITY, DeclineClass, Policy
from dunning.snapshot import AttemptView, InvoiceView

# Stripe's advice on the charge outcome overrides the decline class.
ADVICE_OVERRIDES = {
    "do_not_try_again": DeclineClass.HARD,
    "confirm_card_data": DeclineClass.HARD,
    "try_again_later": DeclineClass.SOFT,
}
WAITS_FOR_CUSTOMER = {DeclineClass.HARD, DeclineClass.FRAUD, DeclineClass.AUTH_REQUIRED}


@dataclass(frozen=True)
class RetryPlan:
    stripe_invoice_id: str
    attempt_number: int  # the attempt this retry will be on the invoice
    at: datetime


@dataclass(frozen=True)
class RetryDecision:
    plan: RetryPlan | None
    waits_for_customer: bool
    reason: str
    facts: dict
    # Ask Stripe for the decline data of this failure ("invoice:attempt"), while unknown.
    lookup: str = ""
    review_at: datetime | None = None  # when the answer may change without a new event
    extra: dict = field(default_factory=dict)


def effective_class(attempt: AttemptView | None, policy: Policy) -> DeclineClass:
    if attempt is None:
        return policy.unknown_decline_class
    return ADVICE_OVERRIDES.get(attempt.advice_code) or policy.classify(attempt.decline_code)


def worst_class(attempts: list[AttemptView], policy: Policy) -> DeclineClass:
    """The most severe class among these declines: a later soft decline never washes out
    an earlier fraud or hard one on the same card."""
    classes = {effective_class(a, policy) for a in attempts}
    for decline_class in CLASS_SEVERITY:
        if decline_class in classes:
            return decline_class
    return policy.unknown_decline_class


def class_unknown(invoice: InvoiceView, failures: list[AttemptView]) -> bool:
    """The invoice's latest failure is one whose decline data has not arrived: Stripe
    counted more attempts than there are failed charges we know of."""
    if invoice.status != "open":
        return False
    known = len(failures)
    return invoice.attempt_count > known or (not known and invoice.payment_failed)


def on_card(attempt: AttemptView, card: str) -> bool:
    # An attempt whose card is not known counts against the card in use (the safe reading).
    return not card or not attempt.payment_method or attempt.payment_method == card


def declines_on_card(
    failures: list[AttemptView],
    card_history: tuple[AttemptView, ...],
    card: str,
    card_updated_at: datetime | None,
) -> list[AttemptView]:
    """The declines that speak for the card a retry would use: on this invoice or any other
    within the network window, made since the card's details last changed."""
    declines = {a for a in (*failures, *card_history) if a.outcome == "failed"}
    return sorted(
        (
            a
            for a in declines
            if on_card(a, card) and not (card_updated_at and a.attempted_at < card_updated_at)
        ),
        key=lambda a: (a.attempted_at, a.pk),
    )


def plan_retry(
    *,
    invoice: InvoiceView,
    failures: list[AttemptView],
    card: str,
    card_history: tuple[AttemptView, ...],
    card_updated_at: datetime | None,
    lookups_asked: dict[str, datetime],
    lookups_ended: frozenset[str],
    now: datetime,
    policy: Policy,
) -> RetryDecision:
    attempts_so_far = max(len(failures), invoice.attempt_count, 1)
    next_attempt = attempts_so_far + 1
    facts = {"invoice": invoice.stripe_invoice_id, "failed_attempts": attempts_so_far}

    unknown = class_unknown(invoice, failures)
    if unknown:
        key = f"{invoice.stripe_invoice_id}:{attempts_so_far}"
        asked = lookups_asked.get(key)
        wait = policy.retries.unknown_class_wait
        if asked is None or (key not in lookups_ended and now < asked + wait):
            until = f" until {asked + wait:%Y-%m-%d %H:%M} UTC" if asked else ""
            return RetryDecision(
                None,
                False,
                "no charge while the decline code of the latest failure is unknown: asking "
                f"Stripe for it, and waiting for the charge event{until}",
                {**facts, "lookup": key},
                lookup=key,
                # Asked now when not yet: the look-up this decision requests is dated now, so the
                # next recompute computes the same review time and writes nothing.
                review_at=(asked or now) + wait,
            )

    latest = failures[-1] if failures else None
    current = declines_on_card(failures, card_history, card, card_updated_at)
    decline_class = worst_class(current, policy) if current else effective_class(latest, policy)
    facts.update(
        decline_code=latest.decline_code if latest else "",
        decline_class=decline_class.value,
    )
    if current and decline_class in WAITS_FOR_CUSTOMER:
        never = "never retried" if decline_class == DeclineClass.FRAUD else "no off-session retry"
        return RetryDecision(
            None,
            True,
            f"{never} after a {decline_class.value} decline on this card: waiting for the customer",
            facts,
        )

    if latest and card_updated_at and card_updated_at > latest.attempted_at:
        candidate = max(card_updated_at, now)
        why = "the payment method was updated after the last decline"
    else:
        code = latest.decline_code if latest else ""
        schedule = (
            policy.retry_schedule(code, decline_class)
            if code and not unknown
            else policy.retries.schedules.get("unknown", ())
        )
        index = attempts_so_far - 1  # the first failure was the original charge
        if index >= len(schedule):
            return RetryDecision(
                None,
                True,
                f"retries exhausted: {attempts_so_far} attempts, schedule of {len(schedule)}",
                facts,
            )
        first = failures[0].attempted_at if failures else invoice.opened_at
        last = latest.attempted_at if latest else first
        candidate = max(first + schedule[index], last + policy.retries.min_gap)
        why = f"retry {index + 1} of {len(schedule)} ({decline_class.value} decline)"
        if unknown:
            # Stripe could not tell and the event never came: plan as an unknown code.
            why = f"retry {index + 1} of {len(schedule)} (decline code never received)"
    return _within_network_rules(
        invoice, next_attempt, candidate, why, card, card_history, facts, policy
    )


def _within_network_rules(
    invoice: InvoiceView,
    next_attempt: int,
    candidate: datetime,
    why: str,
    card: str,
    card_history: tuple[AttemptView, ...],
    facts: dict,
    policy: Policy,
) -> RetryDecision:
    on_this_card = [a for a in card_history if on_card(a, card)]
    brands = {a.card_brand for a in on_this_card if a.card_brand}
    verdict = earliest_retry(
        brand=brands.pop() if len(brands) == 1 else "",
        attempts=[_card_attempt(a) for a in on_this_card],
        not_before=candidate,
        rules=policy.network_rules or DEFAULT_NETWORK_RULES,
    )
    facts = {**facts, "card_attempts_in_window": len(on_this_card)}
    if not verdict.allowed:
        return RetryDecision(
            None,
            True,
            f"no retry on this card: {verdict.reason}",
            {**facts, "network_rule": verdict.rule, "source": verdict.source, **verdict.facts},
        )
    at = verdict.earliest
    reason = f"{why}: on {at:%Y-%m-%d %H:%M} UTC"
    if at > candidate + timedelta(seconds=1):
        reason += f" (held back by the network: {verdict.reason})"
        facts = {**facts, "network_rule": verdict.rule, "source": verdict.source}
    return RetryDecision(
        RetryPlan(invoice.stripe_invoice_id, next_attempt, at), False, reason, facts
    )


def _card_attempt(attempt: AttemptView) -> CardAttempt:
    return CardAttempt(
        at=attempt.attempted_at,
        declined=attempt.outcome == "failed",
        customer_initiated=attempt.customer_initiated,
        decline_code=attempt.decline_code,
        advice_code=attempt.advice_code,
        network_advice_code=attempt.network_advice_code,
        network_decline_code=attempt.network_decline_code,
    )
