"""Reads for support: an account's dunning at a glance, its timeline, its notices.

Every selector costs a constant number of queries whatever the account's history (the
timeline, in `timeline`, is one query per source, merged in Python), and none of them
writes.
"""

from dataclasses import dataclass, field, fields
from datetime import datetime

from django.db.models import Case, Prefetch, QuerySet, When

from billing_events.models import Account, Invoice
from dunning.models import (
    OPEN_STATES,
    BadDebtEpisode,
    CustomerNotice,
    Decision,
    DunningCase,
)
from dunning.support_api.timeline import (
    Timeline,
    TimelineEntry,
    account_timeline,
    placed_notices,
)
from entitlements.models import Restriction

__all__ = ["Timeline", "TimelineEntry", "account_timeline"]  # the timeline's home is `timeline`

UNPAID_STATUSES = (Invoice.Status.OPEN, Invoice.Status.UNCOLLECTIBLE)


def accounts(*, stripe_customer: str | None = None, email: str | None = None) -> QuerySet[Account]:
    """Accounts (one per Stripe customer) with their open case, if any, as `open_cases`;
    `email` matches exactly but case-insensitively (support types what the customer wrote)."""
    queryset = Account.objects.order_by("pk").prefetch_related(
        Prefetch(
            "dunning_cases",
            queryset=DunningCase.objects.filter(state__in=OPEN_STATES),
            to_attr="open_cases",
        )
    )
    if stripe_customer is not None:
        queryset = queryset.filter(stripe_customer_id=stripe_customer)
    if email is not None:
        queryset = queryset.filter(email__iexact=email)
    return queryset


@dataclass(frozen=True)
class NextRetry:
    at: datetime
    decline_class: str


# A field of AccountDunning read from the case as it is (None when the account never had one).
FROM_CASE = {"from_case": True}


@dataclass(frozen=True)
class AccountDunning:
    """The account's dunning as support sees it: its open case, else its latest one."""

    account: Account
    case_id: int | None
    state: str | None = field(metadata=FROM_CASE)
    level: str | None = field(metadata=FROM_CASE)
    resolution: str | None = field(metadata=FROM_CASE)
    decline_class: str | None = field(metadata=FROM_CASE)
    amount_overdue: dict | None = field(metadata=FROM_CASE)
    opened_at: datetime | None = field(metadata=FROM_CASE)
    resolved_at: datetime | None = field(metadata=FROM_CASE)
    next_review_at: datetime | None = field(metadata=FROM_CASE)
    paused_until: datetime | None = field(metadata=FROM_CASE)
    pause_reason: str | None = field(metadata=FROM_CASE)
    grace_until: datetime | None = field(metadata=FROM_CASE)
    grace_reason: str | None = field(metadata=FROM_CASE)
    next_retry: NextRetry | None
    open_invoices: list[Invoice]
    restrictions: list[Restriction]
    last_decision: Decision | None
    last_recompute_at: datetime | None
    policy_version: str | None
    bad_debt_episode: BadDebtEpisode | None


CASE_FIELDS = tuple(f.name for f in fields(AccountDunning) if f.metadata.get("from_case"))


def account_dunning(*, account_id: int) -> AccountDunning:
    """Raises Account.DoesNotExist for an unknown account. Six queries."""
    account = Account.objects.get(pk=account_id)
    case = (
        DunningCase.objects.filter(account_id=account_id)
        .order_by(Case(When(state__in=OPEN_STATES, then=0), default=1), "-opened_at", "-pk")
        .first()
    )
    # The newest decision of the account is the last recompute that wrote anything: a
    # recompute with an empty diff writes no Decision.
    last_decision = (
        Decision.objects.filter(account_id=account_id).order_by("-decided_at", "-pk").first()
    )
    next_retry = None
    if case is not None and case.next_retry_at is not None:
        next_retry = NextRetry(at=case.next_retry_at, decline_class=case.decline_class)
    policy_version = None
    if last_decision is not None:
        policy_version = last_decision.policy_version
    elif case is not None:
        policy_version = case.policy_version
    return AccountDunning(
        account=account,
        case_id=case.pk if case is not None else None,
        **{name: getattr(case, name) if case is not None else None for name in CASE_FIELDS},
        next_retry=next_retry,
        open_invoices=list(
            Invoice.objects.filter(account_id=account_id, status__in=UNPAID_STATUSES).order_by(
                "stripe_created", "pk"
            )
        ),
        restrictions=list(Restriction.objects.filter(account_id=account_id).order_by("since")),
        last_decision=last_decision,
        last_recompute_at=last_decision.decided_at if last_decision is not None else None,
        policy_version=policy_version,
        bad_debt_episode=BadDebtEpisode.objects.filter(
            account_id=account_id, exited_at__isnull=True
        ).first(),
    )


def account_notices(*, account_id: int) -> QuerySet[CustomerNotice]:
    """The account's customer notices, newest first: by when each stands for the customer
    (sent, else taken for sending, else due), as the timeline places them. Raises
    Account.DoesNotExist for an unknown account (an empty list would say "never told")."""
    if not Account.objects.filter(pk=account_id).exists():
        raise Account.DoesNotExist(f"no account {account_id}")
    return placed_notices(account_id).order_by("-when", "-pk")
