"""When to retry a declined invoice: by decline class, within card-network rules. Pure."""

from dataclasses import dataclass
from datetime import datetime

from dunning.policy import DeclineClass, Policy
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


def effective_class(attempt: AttemptView | None, policy: Policy) -> DeclineClass:
    if attempt is None:
        return policy.unknown_decline_class
    return ADVICE_OVERRIDES.get(attempt.advice_code) or policy.classify(attempt.decline_code)


def card_blocked(attempt: AttemptView, policy: Policy) -> bool:
    """The network or Stripe said this card will never be approved."""
    rules = policy.retries
    return (
        attempt.advice_code == "do_not_try_again"
        or attempt.network_advice_code in rules.stop_network_advice_codes
        or attempt.network_decline_code in rules.stop_network_decline_codes
    )


def plan_retry(
    *,
    invoice: InvoiceView,
    failures: list[AttemptView],
    card_attempts_in_window: int,
    payment_method_updated_at: datetime | None,
    policy: Policy,
) -> RetryDecision:
    latest = failures[-1] if failures else None
    decline_class = effective_class(latest, policy)
    attempts_so_far = max(len(failures), invoice.attempt_count, 1)
    facts = {
        "invoice": invoice.stripe_invoice_id,
        "decline_code": latest.decline_code if latest else "",
        "decline_class": decline_class.value,
        "failed_attempts": attempts_so_far,
    }
    next_attempt = attempts_so_far + 1

    if decline_class == DeclineClass.FRAUD:
        return RetryDecision(
            None, True, "never retried after a fraud-type decline: waiting for the customer", facts
        )
    if latest and payment_method_updated_at and payment_method_updated_at > latest.attempted_at:
        return RetryDecision(
            RetryPlan(invoice.stripe_invoice_id, next_attempt, payment_method_updated_at),
            False,
            "retry now: the payment method was updated after the last decline",
            {**facts, "payment_method_updated_at": payment_method_updated_at.isoformat()},
        )
    if latest and card_blocked(latest, policy):
        return RetryDecision(
            None,
            True,
            "no retry on this card: the network advised never to try again",
            {
                **facts,
                "advice_code": latest.advice_code,
                "network_advice_code": latest.network_advice_code,
                "network_decline_code": latest.network_decline_code,
            },
        )
    if decline_class in WAITS_FOR_CUSTOMER:
        return RetryDecision(
            None,
            True,
            f"no off-session retry after a {decline_class.value} decline: waiting for the customer",
            facts,
        )
    if card_attempts_in_window >= policy.retries.card_attempt_cap:
        return RetryDecision(
            None,
            True,
            f"no retry: the card was attempted {card_attempts_in_window} times in "
            f"{policy.retries.card_attempt_window.days} days (network cap "
            f"{policy.retries.card_attempt_cap})",
            {**facts, "card_attempts_in_window": card_attempts_in_window},
        )
    schedule = policy.retry_schedule(latest.decline_code if latest else "", decline_class)
    index = attempts_so_far - 1  # the first failure was the original charge
    if index >= len(schedule):
        return RetryDecision(
            None,
            True,
            f"retries exhausted: {attempts_so_far} attempts, schedule of {len(schedule)} retries",
            facts,
        )
    first = failures[0].attempted_at if failures else invoice.opened_at
    last = latest.attempted_at if latest else first
    at = max(first + schedule[index], last + policy.retries.min_gap)
    return RetryDecision(
        RetryPlan(invoice.stripe_invoice_id, next_attempt, at),
        False,
        f"retry {index + 1} of {len(schedule)} on {at:%Y-%m-%d %H:%M} UTC "
        f"({decline_class.value} decline)",
        facts,
    )
