"""Read the five stores an account's dunning depends on, as plain data.

A constant number of queries whatever the account's history: only invoices that are in
dunning, belong to the open case, or were named by the trigger are loaded.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Exists, F, OuterRef, Q

from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from dunning.models import (
    OPEN_STATES,
    AccountStanding,
    BadDebtEpisode,
    DunningCase,
    OutboxItem,
)
from entitlements.services import restrictions_in_force

DEFAULT_STANDING = "good"


@dataclass(frozen=True)
class InvoiceView:
    pk: int
    stripe_invoice_id: str
    status: str
    amount_remaining: int
    currency: str
    billing_reason: str
    attempt_count: int
    payment_failed: bool
    paid_out_of_band: bool
    opened_at: datetime
    subscription_id: str
    case_id: int | None


@dataclass(frozen=True)
class AttemptView:
    invoice_pk: int
    outcome: str
    decline_code: str
    advice_code: str
    network_advice_code: str
    network_decline_code: str
    payment_method: str
    attempted_at: datetime


@dataclass(frozen=True)
class CaseView:
    pk: int
    state: str
    resolution: str
    level: str
    decline_class: str
    earliest_unpaid_at: datetime | None
    amount_overdue: dict[str, int]
    next_review_at: datetime | None
    next_retry_at: datetime | None
    paused_until: datetime | None = None
    pause_reason: str = ""
    grace_until: datetime | None = None
    grace_reason: str = ""


@dataclass(frozen=True)
class ScheduledRetry:
    """The pending payment retry of the account (there is at most one)."""

    outbox_pk: int
    stripe_invoice_id: str
    attempt_number: int
    at: datetime
    running: bool  # a worker holds it right now


@dataclass(frozen=True)
class Snapshot:
    account_id: int
    invoices: tuple[InvoiceView, ...]
    attempts: tuple[AttemptView, ...]
    subscription_status: dict[str, str]
    case: CaseView | None  # the open case, else a resolved one the trigger's invoice belongs to
    restrictions: dict[str, str]  # code -> level that imposed it
    standing_requested: str
    standing_acknowledged: str
    side_effects_in_flight: int
    payment_method_updated_at: datetime | None
    scheduled_retry: ScheduledRetry | None = None
    # Attempts per card (payment method) within the network's window.
    card_attempts: dict[str, int] = field(default_factory=dict)
    paid_invoices: int = 0
    recent_cases: int = 0  # earlier cases opened within the severity memory
    bad_debt: str | None = None  # reason of the open bad-debt episode
    cancel_requested: frozenset[str] = frozenset()  # subscriptions with a pending cancel


def read_snapshot(
    *,
    account: Account,
    now: datetime,
    card_window: timedelta,
    memory: timedelta,
    invoice_hint: str = "",
) -> Snapshot:
    case = DunningCase.objects.filter(account_id=account.pk, state__in=OPEN_STATES).first()
    if case is None and invoice_hint:
        # A late event about a resolved case's invoice refines that case's record.
        case = DunningCase.objects.filter(
            account_id=account.pk, invoices__invoice__stripe_invoice_id=invoice_hint
        ).first()
    failed_attempt = PaymentAttempt.objects.filter(invoice_id=OuterRef("pk"), outcome="failed")
    relevant = (
        Q(status=Invoice.Status.UNCOLLECTIBLE)
        | Q(status=Invoice.Status.OPEN, attempt_count__gt=0)
        | Q(status=Invoice.Status.OPEN, payment_failed_at__isnull=False)
        | Q(status=Invoice.Status.OPEN) & Exists(failed_attempt)
    )
    if case is not None:
        relevant |= Q(dunning_case_link__case_id=case.pk)
    if invoice_hint:
        relevant |= Q(stripe_invoice_id=invoice_hint)
    invoices = tuple(
        InvoiceView(
            pk=row.pk,
            stripe_invoice_id=row.stripe_invoice_id,
            status=row.status,
            amount_remaining=row.amount_remaining,
            currency=row.currency,
            billing_reason=row.billing_reason,
            attempt_count=row.attempt_count,
            payment_failed=row.payment_failed_at is not None,
            paid_out_of_band=row.paid_out_of_band,
            opened_at=row.finalized_at or row.stripe_created,
            subscription_id=row.stripe_subscription_id,
            case_id=row.case_id,
        )
        for row in Invoice.objects.filter(relevant, account_id=account.pk)
        .annotate(case_id=F("dunning_case_link__case_id"))
        .order_by("pk")
    )
    attempts = tuple(
        AttemptView(
            invoice_pk=row.invoice_id,
            outcome=row.outcome,
            decline_code=row.decline_code or row.failure_code,
            advice_code=row.advice_code,
            network_advice_code=row.network_advice_code,
            network_decline_code=row.network_decline_code,
            payment_method=row.payment_method,
            attempted_at=row.attempted_at,
        )
        for row in PaymentAttempt.objects.filter(
            invoice_id__in=[invoice.pk for invoice in invoices]
        ).order_by("attempted_at", "pk")
    )
    standing = AccountStanding.objects.filter(account_id=account.pk).first()
    pending = list(
        OutboxItem.objects.filter(account_id=account.pk, status=OutboxItem.Status.PENDING).values(
            "pk", "kind", "payload", "next_attempt_at", "claimed_until"
        )
    )
    scheduled_retry = None
    in_flight = 0
    cancel_requested = set()
    for item in pending:
        if item["kind"] == OutboxItem.Kind.CANCEL_SUBSCRIPTION:
            cancel_requested.add(item["payload"]["subscription_id"])
        running = item["claimed_until"] is not None and item["claimed_until"] > now
        if item["kind"] == OutboxItem.Kind.PAYMENT_RETRY:
            scheduled_retry = ScheduledRetry(
                outbox_pk=item["pk"],
                stripe_invoice_id=item["payload"]["stripe_invoice_id"],
                attempt_number=item["payload"]["attempt_number"],
                at=item["next_attempt_at"],
                running=running,
            )
            # A retry waiting for its time is a plan, not a side effect in flight.
            in_flight += running
        else:
            in_flight += 1
    card_attempts = dict(
        PaymentAttempt.objects.filter(account_id=account.pk, attempted_at__gt=now - card_window)
        .exclude(payment_method="")
        .values_list("payment_method")
        .annotate(n=Count("pk"))
        .values_list("payment_method", "n")
    )
    history = Invoice.objects.filter(account_id=account.pk).aggregate(
        paid=Count("pk", filter=Q(status=Invoice.Status.PAID))
    )
    earlier_cases = DunningCase.objects.filter(account_id=account.pk, opened_at__gt=now - memory)
    if case is not None:
        earlier_cases = earlier_cases.exclude(pk=case.pk)
    recent_cases = earlier_cases.count()
    episode = (
        BadDebtEpisode.objects.filter(account_id=account.pk, exited_at__isnull=True)
        .values_list("reason", flat=True)
        .first()
    )
    return Snapshot(
        account_id=account.pk,
        invoices=invoices,
        attempts=attempts,
        subscription_status=dict(
            Subscription.objects.filter(account_id=account.pk).values_list(
                "stripe_subscription_id", "status"
            )
        ),
        case=CaseView(
            pk=case.pk,
            state=case.state,
            resolution=case.resolution,
            level=case.level,
            decline_class=case.decline_class,
            earliest_unpaid_at=case.earliest_unpaid_at,
            amount_overdue=case.amount_overdue,
            next_review_at=case.next_review_at,
            next_retry_at=case.next_retry_at,
            paused_until=case.paused_until,
            pause_reason=case.pause_reason,
            grace_until=case.grace_until,
            grace_reason=case.grace_reason,
        )
        if case
        else None,
        restrictions=restrictions_in_force(account_id=account.pk),
        standing_requested=standing.requested if standing else DEFAULT_STANDING,
        standing_acknowledged=(standing.acknowledged or DEFAULT_STANDING)
        if standing
        else DEFAULT_STANDING,
        side_effects_in_flight=in_flight,
        payment_method_updated_at=account.payment_method_updated_at,
        scheduled_retry=scheduled_retry,
        card_attempts=card_attempts,
        paid_invoices=history["paid"],
        recent_cases=recent_cases,
        bad_debt=episode,
        cancel_requested=frozenset(cancel_requested),
    )
