"""The accounts whose outcome no policy can change, left out of both replays.

Every outcome the report compares (cases and their resolutions, the level reached, money
recovered on a case's invoices, bad debt, write-offs, cancellations, retries, days
restricted or without core access) comes from a dunning case, and a case opens only for an
invoice that went through dunning (`dunning.in_dunning.went_through_dunning`: unpaid after
an attempt, written off, or settled only after a failed one). Without one, the engine's
first rule settles "no invoice is in dunning" before any rule reads the policy: no case, no
restriction, no retry, no side effect, no decision stored, under any policy.

So an account is left out when nothing in the window could put one of its invoices
through dunning in a replay: none of its stored events (those the service caused
included) is a failed charge or payment, or an invoice that had failed, was attempted and
left unpaid, or was written off; the configured database recorded no failed attempt of
its in the window (a failure Stripe's API would tell a replay about); and it had no
dunning case open at the window's start or opened in it. Its outcome in either replay is
the empty one (`AccountOutcome(customer)`), filled in without replaying its events.

An event the service cannot read as being about a customer is always replayed. Tested:
the report on a history is the same with and without the shortcut
(tests/test_backtest.py).
"""

import json
from collections import defaultdict
from dataclasses import replace
from datetime import datetime

from django.db.models import Q

from billing_events.facts import AttemptFact, Fact, InvoiceFact
from billing_events.models import PaymentAttempt
from billing_events.normalize import parse_event
from dunning.models import DunningCase
from simulation.backtest.history import History, StoredEvent


def customer_and_signal(event: StoredEvent) -> tuple[str, bool]:
    """The customer the service files `event` under ("" when it cannot read one), and
    whether the event could put an invoice of theirs through dunning."""
    try:
        fact = parse_event(json.loads(event.body))
    except Exception:  # noqa: BLE001 - unreadable here means: always replay it
        return "", True
    return fact.customer_id, could_open_a_case(fact)


def could_open_a_case(fact: Fact) -> bool:
    """The fact's side of `went_through_dunning`, read generously: any failed attempt, and
    any invoice that is unpaid after an attempt, written off, failed once, or paid or
    voided after more than one attempt."""
    if isinstance(fact, AttemptFact):
        return fact.outcome != "succeeded"
    if isinstance(fact, InvoiceFact):
        return (
            fact.status == "uncollectible"
            or fact.marked_uncollectible_at is not None
            or fact.payment_failed_at is not None
            or (fact.status == "open" and fact.attempt_count > 0)
            or fact.attempt_count > 1
        )
    return False


def with_dunning_in_window(*, since: datetime, until: datetime | None) -> set[str]:
    """Customers the configured database knows were in dunning in the window: a case open
    at its start or opened in it, or a failed attempt recorded in it."""
    cases = DunningCase.objects.filter(Q(resolved_at__isnull=True) | Q(resolved_at__gte=since))
    attempts = PaymentAttempt.objects.filter(
        outcome=PaymentAttempt.Outcome.FAILED, attempted_at__gte=since
    )
    if until is not None:
        cases = cases.filter(opened_at__lt=until)
        attempts = attempts.filter(attempted_at__lt=until)
    return set(cases.values_list("account__stripe_customer_id", flat=True)) | set(
        attempts.values_list("account__stripe_customer_id", flat=True)
    )


def leave_out_policy_independent(
    history: History, *, since: datetime, until: datetime | None
) -> History:
    """`history` without the events of the accounts no policy can change (read from every
    stored event of the window, those the service caused included)."""
    signal: dict[str, bool] = defaultdict(bool)
    customer_of: dict[str, str] = {}
    for event in history.stored:
        customer, could = customer_and_signal(event)
        customer_of[event.stripe_event_id] = customer
        if customer:
            signal[customer] |= could
    dunned = with_dunning_in_window(since=since, until=until)
    independent = {c for c, could in signal.items() if not could and c not in dunned}
    kept = [e for e in history.replayed if customer_of[e.stripe_event_id] not in independent]
    return replace(
        history,
        replayed=kept,
        independent_accounts=sorted(independent),
        independent_events=len(history.replayed) - len(kept),
    )
