"""Merge facts into the mirror stores so that arrival order never matters.

Every field merges with an operation that is commutative, associative and idempotent:
- status moves only up its rank (an invoice never goes from paid back to open);
- amounts and descriptive fields are last-writer-wins by Stripe's clock
  (event `created`, then status rank, then event id as a deterministic tie-break);
- counters take the maximum, status timestamps keep the earliest known value,
  flags such as `paid_out_of_band` only turn on;
- a subscription's last upgrade is its own last-writer-wins (upgrade time, event id),
  apart from the row's version, so a later status change never hides it.
Only fields whose value changes are written, so a duplicate delivery writes nothing.
"""

from datetime import datetime
from typing import Any

from django.db import models

from billing_events import mirror_rows
from billing_events.facts import (
    INVOICE_STATUS_RANK,
    AttemptFact,
    CustomerFact,
    Fact,
    InvoiceFact,
    PaymentMethodFact,
    SubscriptionFact,
)
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription

TERMINAL_SUBSCRIPTION_STATUSES = {"canceled", "incomplete_expired"}


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _save_changes(row: models.Model, values: dict[str, Any]) -> list[str]:
    changed = [name for name, value in values.items() if getattr(row, name) != value]
    for name in changed:
        setattr(row, name, values[name])
    if changed:
        if isinstance(row, Invoice | PaymentAttempt):  # on every event: prepared statements
            mirror_rows.update(row, changed)
        else:
            row.save(update_fields=changed)
    return changed


def merge_invoice(account: Account, fact: InvoiceFact) -> Invoice:
    rank = INVOICE_STATUS_RANK[fact.status]
    latest_values = {
        "stripe_subscription_id": fact.subscription_id,
        "amount_due": fact.amount_due,
        "amount_paid": fact.amount_paid,
        "amount_remaining": fact.amount_remaining,
        "currency": fact.currency,
        "billing_reason": fact.billing_reason,
        "next_payment_attempt": fact.next_payment_attempt,
        "hosted_invoice_url": fact.hosted_invoice_url,
        "line_prices": [line.as_json() for line in fact.line_prices],
        "stripe_created": fact.created,
        "version": fact.version.created,
        "version_rank": rank,
        "version_event_id": fact.version.event_id,
    }
    invoice = mirror_rows.invoice_named(fact.stripe_invoice_id)
    if invoice is None:
        invoice = Invoice(
            account=account,
            stripe_invoice_id=fact.stripe_invoice_id,
            status=fact.status,
            attempt_count=fact.attempt_count,
            paid_out_of_band=fact.paid_out_of_band,
            finalized_at=fact.finalized_at,
            paid_at=fact.paid_at,
            voided_at=fact.voided_at,
            marked_uncollectible_at=fact.marked_uncollectible_at,
            payment_failed_at=fact.payment_failed_at,
            **latest_values,
        )
        mirror_rows.insert(invoice)
    else:
        newer = (fact.version.created, rank, fact.version.event_id) > (
            invoice.version,
            invoice.version_rank,
            invoice.version_event_id,
        )
        values = dict(latest_values) if newer else {}
        if rank > INVOICE_STATUS_RANK[invoice.status]:
            values["status"] = fact.status
        values["attempt_count"] = max(invoice.attempt_count, fact.attempt_count)
        values["paid_out_of_band"] = invoice.paid_out_of_band or fact.paid_out_of_band
        for name in (
            "finalized_at",
            "paid_at",
            "voided_at",
            "marked_uncollectible_at",
            "payment_failed_at",
        ):
            values[name] = _earliest(getattr(invoice, name), getattr(fact, name))
        _save_changes(invoice, values)
    _link_attempts(invoice, fact)
    return invoice


def _link_attempts(invoice: Invoice, fact: InvoiceFact) -> None:
    """Attach attempts that arrived before their invoice, or that only the invoice names."""
    mirror_rows.link_attempts(
        invoice, charge_id=fact.charge_id, payment_intent_id=fact.payment_intent_id
    )


def merge_attempt(account: Account, fact: AttemptFact) -> PaymentAttempt:
    """A charge is immutable once it failed or succeeded; two events about the same
    charge (charge.failed and payment_intent.payment_failed) fill each other's gaps."""
    return upsert_attempt(account, fact)[0]


def upsert_attempt(account: Account, fact: AttemptFact) -> tuple[PaymentAttempt, bool]:
    """The attempt row and whether it was created or changed."""
    values: dict[str, Any] = {
        "stripe_invoice_id": fact.invoice_id,
        "stripe_charge_id": fact.charge_id,
        "stripe_payment_intent_id": fact.payment_intent_id,
        "payment_method": fact.payment_method,
        "decline_code": fact.decline_code,
        "failure_code": fact.failure_code,
        "advice_code": fact.advice_code,
        "network_advice_code": fact.network_advice_code,
        "network_decline_code": fact.network_decline_code,
        "card_brand": fact.card_brand,
        # A failure read back from Stripe's API may not know the amount: zero is a gap.
        "amount": fact.amount,
        "currency": fact.currency,
    }
    attempt = mirror_rows.attempt_keyed(fact.attempt_key)
    if attempt is None:
        # Linked to its invoice as it is written, when the invoice is already known.
        invoice = _invoice_named(fact.invoice_id)
        attempt = PaymentAttempt(
            attempt_key=fact.attempt_key,
            account=account,
            invoice=invoice,
            outcome=fact.outcome,
            attempted_at=fact.attempted_at,
            customer_initiated=fact.customer_initiated,
            **values,
        )
        mirror_rows.insert(attempt)
        return attempt, True
    filled = {name: getattr(attempt, name) or value for name, value in values.items()}
    filled["attempted_at"] = _earliest(attempt.attempted_at, fact.attempted_at)
    # Only one source can prove the customer was there; no source disproves it.
    filled["customer_initiated"] = attempt.customer_initiated or fact.customer_initiated
    if fact.outcome == PaymentAttempt.Outcome.SUCCEEDED:
        filled["outcome"] = fact.outcome
    changed = bool(_save_changes(attempt, filled))
    if attempt.invoice_id is None and attempt.stripe_invoice_id:
        invoice = _invoice_named(attempt.stripe_invoice_id)
        if invoice is not None:
            changed = bool(_save_changes(attempt, {"invoice": invoice})) or changed
    return attempt, changed


def _invoice_named(stripe_invoice_id: str) -> Invoice | None:
    if not stripe_invoice_id:
        return None
    return mirror_rows.invoice_named(stripe_invoice_id)


def merge_subscription(account: Account, fact: SubscriptionFact) -> Subscription:
    subscription = Subscription.objects.filter(
        stripe_subscription_id=fact.stripe_subscription_id
    ).first()
    latest = {
        "status": fact.status,
        "price_ids": list(fact.price_ids),
        "items": [item.as_json() for item in fact.items],
        "version": fact.version.created,
        "version_event_id": fact.version.event_id,
    }
    upgrade = {}
    if fact.items_before_upgrade is not None:
        upgrade = {
            "items_before_upgrade": [item.as_json() for item in fact.items_before_upgrade],
            "upgraded_at": fact.version.created,
            "upgrade_event_id": fact.version.event_id,
        }
    if subscription is None:
        return Subscription.objects.create(
            stripe_subscription_id=fact.stripe_subscription_id,
            account=account,
            canceled_at=fact.canceled_at,
            **latest,
            **upgrade,
        )

    # A cancelled subscription stays cancelled whatever order the events came in:
    # terminal beats live, then Stripe's clock, then the event id.
    def rank(status: str, created: datetime, event_id: str) -> tuple:
        return (status in TERMINAL_SUBSCRIPTION_STATUSES, created, event_id)

    newer = rank(fact.status, fact.version.created, fact.version.event_id) > rank(
        subscription.status, subscription.version, subscription.version_event_id
    )
    values = dict(latest) if newer else {}
    values["canceled_at"] = _earliest(subscription.canceled_at, fact.canceled_at)
    if upgrade and (
        subscription.upgraded_at is None
        or (fact.version.created, fact.version.event_id)
        > (subscription.upgraded_at, subscription.upgrade_event_id)
    ):
        values.update(upgrade)
    _save_changes(subscription, values)
    return subscription


def merge_customer(account: Account, fact: CustomerFact) -> Account:
    values: dict[str, Any] = {}
    current = (account.customer_version, account.customer_version_event_id)
    if account.customer_version is None or (fact.version.created, fact.version.event_id) > current:
        values = {
            "email": fact.email,
            "preferred_locales": list(fact.preferred_locales),
            "default_payment_method": fact.default_payment_method,
            "customer_version": fact.version.created,
            "customer_version_event_id": fact.version.event_id,
        }
    if fact.payment_method_changed:
        values["payment_method_updated_at"] = _latest(
            account.payment_method_updated_at, fact.version.created
        )
    _save_changes(account, values)
    return account


def merge_payment_method(account: Account, fact: PaymentMethodFact) -> Account:
    if fact.card_expiring_at is not None:
        values = {"card_expiring_at": _earliest(account.card_expiring_at, fact.card_expiring_at)}
    elif not fact.changes_card:
        values = {}
    else:
        values = {
            "payment_method_updated_at": _latest(
                account.payment_method_updated_at, fact.version.created
            )
        }
    _save_changes(account, values)
    return account


def merge_fact(account: Account, fact: Fact) -> None:
    match fact:
        case InvoiceFact():
            merge_invoice(account, fact)
        case AttemptFact():
            merge_attempt(account, fact)
        case SubscriptionFact():
            merge_subscription(account, fact)
        case CustomerFact():
            merge_customer(account, fact)
        case PaymentMethodFact():
            merge_payment_method(account, fact)
