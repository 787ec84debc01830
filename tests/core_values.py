"""Plain values for the pure decision core: snapshots, invoices and attempts built without
a database, for table-driven tests and hypothesis strategies."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from dunning.policy import current_policy
from dunning.snapshot import AttemptView, CaseView, InvoiceView, Snapshot

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CARD = "pm_card_visa"
POLICY = current_policy()


def days(n: float) -> timedelta:
    return timedelta(days=n)


def invoice(
    pk: int = 1,
    *,
    status: str = "open",
    amount: int = 4900,
    reason: str = "subscription_cycle",
    attempts: int = 1,
    opened: datetime = T0,
    failed_at: datetime | None = T0,
    updated: datetime | None = None,
    case_id: int | None = None,
    subscription: str = "sub_1",
    currency: str = "usd",
) -> InvoiceView:
    return InvoiceView(
        pk=pk,
        stripe_invoice_id=f"in_{pk}",
        status=status,
        amount_remaining=amount if status in ("open", "uncollectible") else 0,
        currency=currency,
        billing_reason=reason,
        attempt_count=attempts,
        payment_failed_at=failed_at,
        paid_out_of_band=False,
        opened_at=opened,
        subscription_id=subscription,
        case_id=case_id,
        updated_at=updated or failed_at or opened,
    )


_attempt_ids = iter(range(1, 10**9))


def decline(
    invoice_pk: int = 1,
    code: str = "insufficient_funds",
    *,
    at: datetime = T0,
    card: str = CARD,
    brand: str = "visa",
    advice: str = "",
    network_advice: str = "",
    network_decline: str = "",
    outcome: str = "failed",
) -> AttemptView:
    return AttemptView(
        invoice_pk=invoice_pk,
        outcome=outcome,
        decline_code=code,
        advice_code=advice,
        network_advice_code=network_advice,
        network_decline_code=network_decline,
        payment_method=card,
        attempted_at=at,
        card_brand=brand,
        pk=next(_attempt_ids),
    )


def case(level: str = "notice", *, since: datetime = T0, pk: int = 10, **fields) -> CaseView:
    values = {
        "pk": pk,
        "state": "retrying",
        "resolution": "",
        "level": level,
        "decline_class": "soft",
        "earliest_unpaid_at": T0,
        "amount_overdue": {"usd": 4900},
        "next_review_at": None,
        "next_retry_at": None,
        "opened_at": T0,
        "level_since": since,
    }
    values.update(fields)
    return CaseView(**values)


def snapshot(invoices=(), attempts=(), *, case_view=None, **fields) -> Snapshot:
    attempts = tuple(attempts)
    values = {
        "account_id": 1,
        "invoices": tuple(invoices),
        "attempts": attempts,
        "subscription_status": {"sub_1": "past_due"},
        "case": case_view,
        "restrictions": {},
        "standing_requested": "good",
        "standing_acknowledged": "good",
        "side_effects_in_flight": 0,
        "payment_method_updated_at": None,
        "default_payment_method": CARD,
        "card_history": attempts,
    }
    values.update(fields)
    return Snapshot(**values)


def in_case(snap: Snapshot, case_view: CaseView) -> Snapshot:
    """The same facts, with every invoice already linked to `case_view`."""
    return replace(
        snap,
        case=case_view,
        invoices=tuple(replace(i, case_id=case_view.pk) for i in snap.invoices),
    )
