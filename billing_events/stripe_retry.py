"""Calling Stripe again after a 429 or a 5xx, as Stripe asks clients to.

Stripe's own guidance: retry 429, 409 (lock) and 5xx with exponential backoff and jitter;
`Stripe-Should-Retry` overrides the status either way; `Retry-After`, when sent, is the
least wait. The sleep is injected so tests do not wait for real.
"""

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import stripe

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8  # calls in all, the first included
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = field(default=random.random)


def _header(error: stripe.StripeError, name: str) -> str | None:
    for key, value in (error.headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def should_retry(error: stripe.StripeError) -> bool:
    if isinstance(error, stripe.APIConnectionError):
        return True
    verdict = _header(error, "stripe-should-retry")
    if verdict is not None:
        return verdict.lower() == "true"
    status = error.http_status or 0
    return status in (409, 429) or status >= 500


def delay_seconds(error: stripe.StripeError, retry: int, policy: RetryPolicy) -> float:
    """Full-range jitter on half the exponential step (so two importers spread out), never
    under Retry-After, never over the cap."""
    step = min(policy.cap_seconds, policy.base_seconds * 2**retry)
    wait = step / 2 + policy.jitter() * step / 2
    retry_after = _header(error, "retry-after")
    if retry_after is not None:
        with contextlib.suppress(ValueError):  # an HTTP date: the backoff stands
            wait = max(wait, float(retry_after))
    return min(wait, policy.cap_seconds)


def call_with_retries(
    call: Callable[[], T], policy: RetryPolicy, on_retry: Callable[[float], None] | None = None
) -> T:
    """`call()`, again after a retryable Stripe error, at most `policy.attempts` times."""
    for retry in range(policy.attempts):
        try:
            return call()
        except stripe.StripeError as error:
            if retry + 1 >= policy.attempts or not should_retry(error):
                raise
            wait = delay_seconds(error, retry, policy)
            if on_retry is not None:
                on_retry(wait)
            policy.sleep(wait)
    raise AssertionError("unreachable")
