"""Reads for support: an account's dunning at a glance and its timeline.

Every selector costs a constant number of queries whatever the account's history (the
timeline is one query per source, merged in Python), and none of them writes.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Case, Prefetch, QuerySet, When

from billing_events.models import Account, Invoice, PaymentAttempt, WebhookEvent
from dunning.models import (
    OPEN_STATES,
    BadDebtEpisode,
    CaseTransition,
    Decision,
    DunningCase,
    OutboxItem,
    OutcomeEvent,
    SupportAction,
)
from entitlements.models import Restriction

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


# Read from the case as they are (None when the account never had a case).
CASE_FIELDS = (
    "state",
    "level",
    "resolution",
    "decline_class",
    "amount_overdue",
    "opened_at",
    "resolved_at",
    "next_review_at",
    "paused_until",
    "pause_reason",
    "grace_until",
    "grace_reason",
)


@dataclass(frozen=True)
class AccountDunning:
    """The account's dunning as support sees it: its open case, else its latest one."""

    account: Account
    case_id: int | None
    state: str | None
    level: str | None
    resolution: str | None
    decline_class: str | None
    amount_overdue: dict | None
    opened_at: datetime | None
    resolved_at: datetime | None
    next_review_at: datetime | None
    paused_until: datetime | None
    pause_reason: str | None
    grace_until: datetime | None
    grace_reason: str | None
    next_retry: NextRetry | None
    open_invoices: list[Invoice]
    restrictions: list[Restriction]
    last_decision: Decision | None
    last_recompute_at: datetime | None
    policy_version: str | None
    bad_debt_episode: BadDebtEpisode | None


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


# --- the timeline -------------------------------------------------------------------------

# Entries at the same instant (frequent on the test clock, where time stands still) keep
# cause before effect: what came from outside first, then per decision (in the order they
# were made) the support action that asked for it, the decision, and what it caused.
KIND_ORDER = (
    "webhook_event",
    "payment_attempt",
    "support_action",
    "decision",
    "case_transition",
    "outcome_event",
    "side_effect",
)
_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}
_FROM_OUTSIDE = {"webhook_event", "payment_attempt"}
_NO_DECISION = float("inf")  # e.g. a recompute that changed nothing: after the decisions


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str
    summary: str
    detail: dict = field(default_factory=dict)
    pk: int = 0
    decision_id: int | None = None  # the decision it belongs to, for ordering

    @property
    def sort_key(self) -> tuple:
        if self.kind in _FROM_OUTSIDE:
            return (self.at, 0, 0, _RANK[self.kind], self.pk)
        decision = self.decision_id if self.decision_id is not None else _NO_DECISION
        return (self.at, 1, decision, _RANK[self.kind], self.pk)


@dataclass(frozen=True)
class Timeline:
    account_id: int
    entries: list[TimelineEntry]
    truncated: bool  # older entries than the oldest shown exist


def account_timeline(*, account_id: int, limit: int = 500) -> Timeline:
    """The newest `limit` entries of the account's history, oldest first.

    One query for the account and one per source (eight in all, whatever the history):
    each source gives at most `limit + 1` newest rows, then the sources are merged.
    Raises Account.DoesNotExist for an unknown account.
    """
    if not Account.objects.filter(pk=account_id).exists():
        raise Account.DoesNotExist(f"no account {account_id}")
    entries: list[TimelineEntry] = []
    for source in _SOURCES:
        entries.extend(source(account_id, limit + 1))
    entries.sort(key=lambda entry: entry.sort_key)
    truncated = len(entries) > limit
    return Timeline(account_id=account_id, entries=entries[-limit:], truncated=truncated)


def _newest(queryset: QuerySet, time_field: str, limit: int) -> QuerySet:
    return queryset.order_by(f"-{time_field}", "-pk")[:limit]


def _webhook_events(account_id: int, limit: int) -> list[TimelineEntry]:
    rows = _newest(
        WebhookEvent.objects.filter(account_id=account_id).defer("raw_body"), "received_at", limit
    )
    return [
        TimelineEntry(
            at=row.received_at,
            kind="webhook_event",
            summary=f"{row.type} ({row.status})",
            detail={
                "stripe_event_id": row.stripe_event_id,
                "type": row.type,
                "status": row.status,
                "stripe_created": row.stripe_created,
                "received_at": row.received_at,
                "processed_at": row.processed_at,
                "attempts": row.attempts,
                "last_error": row.last_error,
            },
            pk=row.pk,
        )
        for row in rows
    ]


def _payment_attempts(account_id: int, limit: int) -> list[TimelineEntry]:
    rows = _newest(PaymentAttempt.objects.filter(account_id=account_id), "attempted_at", limit)
    return [
        TimelineEntry(
            at=row.attempted_at,
            kind="payment_attempt",
            summary=_attempt_summary(row),
            detail={
                "attempt_key": row.attempt_key,
                "stripe_invoice_id": row.stripe_invoice_id,
                "outcome": row.outcome,
                "amount": row.amount,
                "currency": row.currency,
                "decline_code": row.decline_code,
                "failure_code": row.failure_code,
                "advice_code": row.advice_code,
                "network_advice_code": row.network_advice_code,
                "network_decline_code": row.network_decline_code,
                "payment_method": row.payment_method,
            },
            pk=row.pk,
        )
        for row in rows
    ]


def _attempt_summary(row: PaymentAttempt) -> str:
    money = f"{row.amount} {row.currency}"
    if row.outcome == PaymentAttempt.Outcome.SUCCEEDED:
        return f"payment of {money} succeeded"
    codes = ", ".join(
        code for code in (row.decline_code, row.failure_code, row.advice_code) if code
    )
    return f"payment of {money} failed" + (f" ({codes})" if codes else "")


def _case_transitions(account_id: int, limit: int) -> list[TimelineEntry]:
    rows = _newest(CaseTransition.objects.filter(case__account_id=account_id), "at", limit)
    return [
        TimelineEntry(
            at=row.at,
            kind="case_transition",
            summary=f"case {row.case_id}: {row.from_state or 'new'} -> {row.to_state}",
            detail={
                "case_id": row.case_id,
                "from": row.from_state,
                "to": row.to_state,
                "trigger": row.trigger,
                "actor": row.actor,
                "decision_id": row.decision_id,
            },
            pk=row.pk,
            decision_id=row.decision_id,
        )
        for row in rows
    ]


def _decisions(account_id: int, limit: int) -> list[TimelineEntry]:
    rows = _newest(
        Decision.objects.filter(account_id=account_id).defer("explanation"), "decided_at", limit
    )
    return [
        TimelineEntry(
            at=row.decided_at,
            kind="decision",
            summary=row.summary,
            detail={
                "decision_id": row.pk,
                "case_id": row.case_id,
                "trigger": row.trigger,
                "actor": row.actor,
                "policy_version": row.policy_version,
                "changes": row.changes,
            },
            pk=row.pk,
            decision_id=row.pk,
        )
        for row in rows
    ]


def _outcome_events(account_id: int, limit: int) -> list[TimelineEntry]:
    rows = _newest(OutcomeEvent.objects.filter(account_id=account_id), "created_at", limit)
    return [
        TimelineEntry(
            at=row.created_at,
            kind="outcome_event",
            summary=f"{row.type} #{row.sequence}",
            detail={
                "type": row.type,
                "sequence": row.sequence,
                "decision_id": row.decision_id,
                "payload": row.payload,
            },
            pk=row.pk,
            decision_id=row.decision_id,
        )
        for row in rows
    ]


def _side_effects(account_id: int, limit: int) -> list[TimelineEntry]:
    rows = _newest(OutboxItem.objects.filter(account_id=account_id), "created_at", limit)
    return [
        TimelineEntry(
            at=row.created_at,
            kind="side_effect",
            summary=_side_effect_summary(row),
            detail={
                "outbox_id": row.pk,
                "kind": row.kind,
                "key": row.key,
                "status": row.status,
                "attempts": row.attempts,
                "last_error": row.last_error,
                "next_attempt_at": row.next_attempt_at,
                "completed_at": row.completed_at,
                "decision_id": row.decision_id,
            },
            pk=row.pk,
            decision_id=row.decision_id,
        )
        for row in rows
    ]


def _side_effect_summary(row: OutboxItem) -> str:
    summary = f"{row.kind} {row.status}"
    if row.attempts:
        summary += f" after {row.attempts} attempt(s)"
    if row.last_error:
        summary += f"; last error: {row.last_error[:120]}"
    return summary


def _support_actions(account_id: int, limit: int) -> list[TimelineEntry]:
    rows = _newest(SupportAction.objects.filter(account_id=account_id), "at", limit)
    return [
        TimelineEntry(
            at=row.at,
            kind="support_action",
            summary=f"{row.action} by {row.actor}",
            detail={
                "actor": row.actor,
                "action": row.action,
                "payload": row.payload,
                "result": row.result,
            },
            pk=row.pk,
            decision_id=(row.result or {}).get("decision_id"),
        )
        for row in rows
    ]


_SOURCES = (
    _webhook_events,
    _payment_attempts,
    _case_transitions,
    _decisions,
    _outcome_events,
    _side_effects,
    _support_actions,
)
