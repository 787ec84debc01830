"""What one replay left each account with, read from its scratch database at the end of the
window, and the comparison of two replays account by account."""

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from billing_events.models import Account
from dunning.models import (
    OPEN_STATES,
    BadDebtEpisode,
    CaseInvoice,
    Decision,
    DunningCase,
    OutboxItem,
    Resolution,
)
from dunning.policy import LADDER_ORDER

RANK = {str(level): rank for rank, level in enumerate(LADDER_ORDER)}


@dataclass
class AccountOutcome:
    customer: str
    resolutions: list[str] = field(default_factory=list)  # each case's, oldest first
    open_level: str = ""  # the level of a case still open at the end of the window
    recovered: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    bad_debt: bool = False
    written_off: bool = False
    cancelled: bool = False
    retries: int = 0
    retries_succeeded: int = 0
    highest_rung: str = ""
    days_restricted: int = 0
    days_without_core: int = 0
    explanation: dict = field(default_factory=dict)  # the last decision's, for people

    def compared(self) -> dict:
        """Everything that counts as the outcome (the explanation does not)."""
        values = asdict(self)
        values.pop("explanation")
        return values


def collect(restricted_days: Counter, core_days: Counter) -> dict[str, AccountOutcome]:
    outcomes = {
        customer: AccountOutcome(customer)
        for customer in Account.objects.values_list("stripe_customer_id", flat=True)
    }
    for customer, state, resolution, level in DunningCase.objects.order_by(
        "opened_at", "pk"
    ).values_list("account__stripe_customer_id", "state", "resolution", "level"):
        outcome = outcomes[customer]
        if state in OPEN_STATES:
            outcome.open_level = level
        else:
            outcome.resolutions.append(resolution)
        outcome.written_off |= resolution == Resolution.WRITTEN_OFF
        outcome.cancelled |= resolution == Resolution.CANCELLED
    recovered: dict[str, Counter] = defaultdict(Counter)
    for customer, currency, paid in CaseInvoice.objects.filter(
        invoice__status="paid", invoice__paid_out_of_band=False
    ).values_list("case__account__stripe_customer_id", "invoice__currency", "invoice__amount_paid"):
        recovered[customer][currency] += paid
    for customer, amounts in recovered.items():
        outcomes[customer].recovered = dict(sorted(amounts.items()))
    for customer in BadDebtEpisode.objects.values_list("account__stripe_customer_id", flat=True):
        outcomes[customer].bad_debt = True
    for customer, result in OutboxItem.objects.filter(
        kind=OutboxItem.Kind.PAYMENT_RETRY, status=OutboxItem.Status.DONE
    ).values_list("account__stripe_customer_id", "result"):
        outcomes[customer].retries += 1
        outcomes[customer].retries_succeeded += result.get("outcome") == "succeeded"
    for customer in OutboxItem.objects.filter(
        kind=OutboxItem.Kind.CANCEL_SUBSCRIPTION, status=OutboxItem.Status.DONE
    ).values_list("account__stripe_customer_id", flat=True):
        outcomes[customer].cancelled = True
    for customer, changes, summary, explanation, version, at in Decision.objects.order_by(
        "decided_at", "pk"
    ).values_list(
        "account__stripe_customer_id",
        "changes",
        "summary",
        "explanation",
        "policy_version",
        "decided_at",
    ):
        outcome = outcomes[customer]
        for change in changes:
            to = change.get("to")
            is_level = change.get("field") == "level" and to in RANK
            if is_level and RANK[to] > RANK.get(outcome.highest_rung, -1):
                outcome.highest_rung = to
        outcome.explanation = {
            "decided_at": at.isoformat(),
            "policy_version": version,
            "summary": summary,
            "explanation": explanation,
        }
    for customer, outcome in outcomes.items():
        outcome.days_restricted = restricted_days.get(customer, 0)
        outcome.days_without_core = core_days.get(customer, 0)
    return outcomes


def changes(before: AccountOutcome, after: AccountOutcome) -> dict[str, tuple]:
    """Field -> (active, candidate), for the fields that differ."""
    old, new = before.compared(), after.compared()
    return {key: (old[key], new[key]) for key in old if old[key] != new[key]}
