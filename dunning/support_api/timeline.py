"""An account's timeline: every source of its history, one query each, merged in Python.

Each source is described once (`Source`: which rows, which time, what to say about a row)
and built by the one `Source.entries`; adding a source is adding a description.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from django.db.models import QuerySet
from django.db.models.functions import Coalesce

from billing_events.models import Account, PaymentAttempt, WebhookEvent
from dunning.models import (
    CaseTransition,
    CustomerNotice,
    Decision,
    OutboxItem,
    OutcomeEvent,
    SupportAction,
)

# Entries at the same instant (frequent on the test clock, where time stands still) keep
# cause before effect: what came from outside first, then per decision (in the order they
# were made) the support action that asked for it, the decision, and what it caused; the
# message to the customer last, as it goes out through a side effect.
KIND_ORDER = (
    "webhook_event",
    "payment_attempt",
    "support_action",
    "decision",
    "case_transition",
    "outcome_event",
    "side_effect",
    "notice",
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


def _same(*names: str) -> dict[str, str]:
    return {name: name for name in names}


@dataclass(frozen=True)
class Source:
    """One kind of timeline entry: the account's rows, the time a row is placed at (a
    column or an annotation of `rows`), its one-line summary and its detail (entry key ->
    row attribute)."""

    kind: str
    rows: Callable[[int], QuerySet]
    at: str
    summary: Callable[[Any], str]
    detail: dict[str, str]
    decision_id: Callable[[Any], int | None] = attrgetter("decision_id")

    def entries(self, account_id: int, limit: int) -> list[TimelineEntry]:
        rows = self.rows(account_id).order_by(f"-{self.at}", "-pk")[:limit]
        return [
            TimelineEntry(
                at=getattr(row, self.at),
                kind=self.kind,
                summary=self.summary(row),
                detail={key: getattr(row, name) for key, name in self.detail.items()},
                pk=row.pk,
                decision_id=self.decision_id(row),
            )
            for row in rows
        ]


def account_timeline(*, account_id: int, limit: int = 500) -> Timeline:
    """The newest `limit` entries of the account's history, oldest first.

    One query for the account and one per source (nine in all, whatever the history):
    each source gives at most `limit + 1` newest rows, then the sources are merged.
    Raises Account.DoesNotExist for an unknown account.
    """
    if not Account.objects.filter(pk=account_id).exists():
        raise Account.DoesNotExist(f"no account {account_id}")
    entries: list[TimelineEntry] = []
    for source in SOURCES:
        entries.extend(source.entries(account_id, limit + 1))
    entries.sort(key=lambda entry: entry.sort_key)
    truncated = len(entries) > limit
    return Timeline(account_id=account_id, entries=entries[-limit:], truncated=truncated)


# --- what each source says ----------------------------------------------------------------
def _attempt_summary(row: PaymentAttempt) -> str:
    money = f"{row.amount} {row.currency}"
    if row.outcome == PaymentAttempt.Outcome.SUCCEEDED:
        return f"payment of {money} succeeded"
    codes = ", ".join(
        code for code in (row.decline_code, row.failure_code, row.advice_code) if code
    )
    return f"payment of {money} failed" + (f" ({codes})" if codes else "")


def _side_effect_summary(row: OutboxItem) -> str:
    summary = f"{row.kind} {row.status}"
    if row.attempts:
        summary += f" after {row.attempts} attempt(s)"
    if row.last_error:
        summary += f"; last error: {row.last_error[:120]}"
    return summary


def _notice_summary(row: CustomerNotice) -> str:
    summary = f"{row.kind} by {row.channel or 'no channel'}: {row.status}"
    if row.subject:
        summary += f' "{row.subject}"'
    if row.reason:
        summary += f" ({row.reason[:120]})"
    return summary


def placed_notices(account_id: int) -> QuerySet[CustomerNotice]:
    # A notice is placed where it stands for the customer: sent, else taken for sending,
    # else the day it is due (a scheduled one can be in the future).
    # (`when`; the notifications list is ordered by it too.)
    return CustomerNotice.objects.filter(account_id=account_id).annotate(
        when=Coalesce("sent_at", "claimed_at", "due_at")
    )


SOURCES = (
    Source(
        kind="webhook_event",
        rows=lambda account_id: WebhookEvent.objects.filter(account_id=account_id).defer(
            "raw_body"
        ),
        at="received_at",
        summary=lambda row: f"{row.type} ({row.status})",
        detail=_same(
            "stripe_event_id",
            "type",
            "status",
            "stripe_created",
            "received_at",
            "processed_at",
            "attempts",
            "last_error",
        ),
        decision_id=lambda row: None,
    ),
    Source(
        kind="payment_attempt",
        rows=lambda account_id: PaymentAttempt.objects.filter(account_id=account_id),
        at="attempted_at",
        summary=_attempt_summary,
        detail=_same(
            "attempt_key",
            "stripe_invoice_id",
            "outcome",
            "amount",
            "currency",
            "decline_code",
            "failure_code",
            "advice_code",
            "network_advice_code",
            "network_decline_code",
            "payment_method",
        ),
        decision_id=lambda row: None,
    ),
    Source(
        kind="case_transition",
        rows=lambda account_id: CaseTransition.objects.filter(case__account_id=account_id),
        at="at",
        summary=lambda row: f"case {row.case_id}: {row.from_state or 'new'} -> {row.to_state}",
        detail={
            "case_id": "case_id",
            "from": "from_state",
            "to": "to_state",
            **_same("trigger", "actor", "decision_id"),
        },
    ),
    Source(
        kind="decision",
        rows=lambda account_id: Decision.objects.filter(account_id=account_id).defer("explanation"),
        at="decided_at",
        summary=attrgetter("summary"),
        detail={
            "decision_id": "pk",
            **_same("case_id", "trigger", "actor", "policy_version", "changes"),
        },
        decision_id=attrgetter("pk"),
    ),
    Source(
        kind="outcome_event",
        rows=lambda account_id: OutcomeEvent.objects.filter(account_id=account_id),
        at="created_at",
        summary=lambda row: f"{row.type} #{row.sequence}",
        detail=_same("type", "sequence", "decision_id", "payload"),
    ),
    Source(
        kind="side_effect",
        rows=lambda account_id: OutboxItem.objects.filter(account_id=account_id),
        at="created_at",
        summary=_side_effect_summary,
        detail={
            "outbox_id": "pk",
            **_same(
                "kind",
                "key",
                "status",
                "attempts",
                "last_error",
                "next_attempt_at",
                "completed_at",
                "decision_id",
            ),
        },
    ),
    Source(
        kind="support_action",
        rows=lambda account_id: SupportAction.objects.filter(account_id=account_id),
        at="at",
        summary=lambda row: f"{row.action} by {row.actor}",
        detail=_same("actor", "action", "payload", "result"),
        decision_id=lambda row: (row.result or {}).get("decision_id"),
    ),
    Source(
        kind="notice",
        rows=placed_notices,
        at="when",
        summary=_notice_summary,
        detail={
            "notice_id": "pk",
            **_same(
                "kind",
                "key",
                "channel",
                "status",
                "subject",
                "reason",
                "language",
                "due_at",
                "claimed_at",
                "sent_at",
                "case_id",
                "decision_id",
            ),
        },
    ),
)
