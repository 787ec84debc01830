"""Signs that Stripe Billing still retries or cancels on its own while dunning owns both.

With Smart Retries (or a custom retry schedule) left on in Stripe's settings, Stripe
charges the card between dunning's retries, and "cancel the subscription" after its last
retry cancels it under an open case. Two rules, on plain values:

- An invoice was retried by Stripe when Stripe's `attempt_count` is more than its first
  attempt plus the retries dunning made, or when more failed charges not made by dunning
  (and not by the customer, on-session) exist than the first one. Stripe counts only its
  automatic retries after the first attempt, so either figure never overstates it.
- A subscription was cancelled by Stripe when it is cancelled, the cancellation came
  after the case opened, and dunning had not asked for it before then.

`conflicted_cases` reads the open cases' figures in two queries (the metrics scrape and the
admin filter use it); the rules are `stripe_retries` and `cancelled_by_stripe`.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Exists, F, Min, OuterRef, Q, Subquery
from django.db.models.fields.json import KT

from billing_events.models import PaymentAttempt, Subscription
from dunning.models import OPEN_STATES, CaseInvoice, DunningCase, OutboxItem

RETRIED = "stripe_retried"
CANCELLED = "stripe_cancelled"
KINDS = (RETRIED, CANCELLED)
OUR_ATTEMPT_PREFIX = "attempt:retry:"  # the attempt key of a retry with no charge id


@dataclass(frozen=True)
class InvoiceAttempts:
    attempt_count: int  # Stripe's, on the invoice
    our_retries: int  # dunning's pay calls that reached the card (succeeded or declined)
    foreign_failures: int  # failed off-session charges on it that dunning did not make


def stripe_retries(attempts: InvoiceAttempts) -> int:
    """How many retries Stripe made on its own (0 when none is visible)."""
    by_count = attempts.attempt_count - 1 - attempts.our_retries
    by_charges = attempts.foreign_failures - 1
    return max(by_count, by_charges, 0)


@dataclass(frozen=True)
class SubscriptionEnd:
    status: str
    canceled_at: datetime | None
    case_opened_at: datetime
    we_asked_at: datetime | None  # dunning's first request to cancel it, if any


def cancelled_by_stripe(end: SubscriptionEnd) -> bool:
    if end.status != "canceled" or end.canceled_at is None:
        return False
    if end.canceled_at < end.case_opened_at:
        return False  # cancelled before dunning had a case: not a conflict of settings
    return end.we_asked_at is None or end.we_asked_at > end.canceled_at


def _retried_cases() -> dict[int, list[str]]:
    our_retries = OutboxItem.objects.filter(
        kind=OutboxItem.Kind.PAYMENT_RETRY,
        status=OutboxItem.Status.DONE,
        result__outcome__in=["succeeded", "declined"],
    )
    our_charges = our_retries.annotate(charge=KT("result__charge_id")).filter(
        account_id=OuterRef("account_id"), charge=OuterRef("stripe_charge_id")
    )
    foreign = (
        PaymentAttempt.objects.filter(
            invoice_id=OuterRef("invoice_id"),
            outcome=PaymentAttempt.Outcome.FAILED,
            customer_initiated=False,
        )
        .exclude(attempt_key__startswith=OUR_ATTEMPT_PREFIX)
        .annotate(ours=Exists(our_charges))
        .filter(Q(ours=False) | Q(stripe_charge_id=""))
        .order_by()
        .values("invoice_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    ours = (
        our_retries.annotate(invoice=KT("payload__stripe_invoice_id"))
        .filter(
            account_id=OuterRef("case__account_id"),
            invoice=OuterRef("invoice__stripe_invoice_id"),
        )
        .order_by()
        .values("invoice")
        .annotate(n=Count("pk"))
        .values("n")
    )
    rows = (
        CaseInvoice.objects.filter(case__state__in=OPEN_STATES, invoice__status="open")
        .annotate(
            ours=Subquery(ours),
            foreign=Subquery(foreign),
            attempt_count=F("invoice__attempt_count"),
            stripe_invoice_id=F("invoice__stripe_invoice_id"),
        )
        .values_list("case_id", "stripe_invoice_id", "attempt_count", "ours", "foreign")
    )
    cases: dict[int, list[str]] = {}
    for case_id, invoice_id, attempt_count, ours_n, foreign_n in rows:
        attempts = InvoiceAttempts(attempt_count or 0, ours_n or 0, foreign_n or 0)
        if stripe_retries(attempts):
            cases.setdefault(case_id, []).append(invoice_id)
    return cases


def _cancelled_cases() -> dict[int, list[str]]:
    asked = (
        OutboxItem.objects.annotate(subscription=KT("payload__subscription_id"))
        .filter(
            kind=OutboxItem.Kind.CANCEL_SUBSCRIPTION,
            account_id=OuterRef("account_id"),
            subscription=OuterRef("stripe_subscription_id"),
        )
        .exclude(status=OutboxItem.Status.SUPERSEDED)
        .order_by()
        .values("account_id")
        .annotate(first=Min("created_at"))
        .values("first")
    )
    open_case = DunningCase.objects.filter(account_id=OuterRef("account_id"), state__in=OPEN_STATES)
    rows = (
        Subscription.objects.filter(status="canceled")
        .annotate(
            case_id=Subquery(open_case.values("pk")[:1]),
            case_opened_at=Subquery(open_case.values("opened_at")[:1]),
            we_asked_at=Subquery(asked),
        )
        .filter(case_id__isnull=False)
        .values_list(
            "case_id",
            "stripe_subscription_id",
            "status",
            "canceled_at",
            "case_opened_at",
            "we_asked_at",
        )
    )
    cases: dict[int, list[str]] = {}
    for case_id, subscription_id, status, canceled_at, opened_at, asked_at in rows:
        if cancelled_by_stripe(SubscriptionEnd(status, canceled_at, opened_at, asked_at)):
            cases.setdefault(case_id, []).append(subscription_id)
    return cases


def conflicted_cases() -> dict[str, dict[int, list[str]]]:
    """{kind: {open case id: the invoices or subscriptions that show it}}."""
    return {RETRIED: _retried_cases(), CANCELLED: _cancelled_cases()}
