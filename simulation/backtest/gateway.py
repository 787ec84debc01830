"""Stripe answering a replay's retries: from what happened at Stripe where the history
knows, else from the decline class's observed rate.

The history knows when the invoice's charges say so, on the rule that an invoice's charges
keep failing until the first one that succeeds (a card that is declined today was declined
yesterday; one that paid yesterday pays today):

- a charge on the invoice succeeded at or before the retry: it succeeds;
- a charge on the invoice failed at or after the retry: it is declined, with that code;
- otherwise the history does not know, and the retry succeeds with the share of later
  charges that succeeded for invoices of its decline class in the window, drawn from a
  `Random` seeded by the invoice and the attempt, so every run answers the same.
"""

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from billing_events.gateway import PaymentResult, declined, succeeded
from simulation.backtest.history import Charge

HISTORY, CLASS_RATE = "history", "class_rate"


@dataclass(frozen=True)
class Answer:
    succeeded: bool
    decline_code: str
    source: str  # HISTORY or CLASS_RATE


def answer(
    charges: list[Charge], at: datetime, *, rate: float, invoice_id: str, attempt: int
) -> Answer:
    """The pure rule above, for a retry of `invoice_id` at `at`."""
    success = next((charge.at for charge in charges if charge.succeeded), None)
    if success is not None and success <= at:
        return Answer(True, "", HISTORY)
    later_failure = next(
        (charge for charge in charges if not charge.succeeded and charge.at >= at), None
    )
    if later_failure is not None:
        return Answer(False, later_failure.decline_code or "generic_decline", HISTORY)
    last_code = next(
        (c.decline_code for c in reversed(charges) if not c.succeeded and c.decline_code),
        "generic_decline",
    )
    drawn = random.Random(f"{invoice_id}:{attempt}").random()
    return Answer(drawn < rate, "" if drawn < rate else last_code, CLASS_RATE)


@dataclass
class HistoryGateway:
    """The `decide` hook of the simulated gateway for one replay; it keeps what it answered
    (for the report) and what Stripe then sends (`answered`, drained by the replay)."""

    charges: dict[str, list[Charge]]
    rates: dict[str, float]  # decline class -> rate
    class_of: dict[str, str]  # invoice -> decline class of its first failure
    now: object  # () -> datetime: the test clock
    sources: Counter = field(default_factory=Counter)
    answered: list[tuple[datetime, str, int, Answer]] = field(default_factory=list)

    def decide(self, invoice_id: str, attempt: int) -> PaymentResult:
        at = self.now()
        rate = self.rates.get(self.class_of.get(invoice_id, ""), 0.0)
        result = answer(
            self.charges.get(invoice_id, []), at, rate=rate, invoice_id=invoice_id, attempt=attempt
        )
        self.sources[result.source] += 1
        self.answered.append((at, invoice_id, attempt, result))
        return succeeded() if result.succeeded else declined(result.decline_code)
