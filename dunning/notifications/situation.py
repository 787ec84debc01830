"""The decision in the plain values the notice planner reads (see `plan`)."""

from dunning.deliberation import Deliberation, overdue_by_currency
from dunning.models import OPEN_STATES
from dunning.notifications.plan import CardSituation, CaseSituation
from dunning.snapshot import Snapshot


def card_situation(snapshot: Snapshot) -> CardSituation:
    return CardSituation(snapshot.card_expiring_at, snapshot.payment_method_updated_at)


def case_situation(d: Deliberation) -> CaseSituation | None:
    """The case the customer hears about: open now, or settled this recompute after it was
    open (a failure and its payment learned together were never news to the customer)."""
    if not d.covered:
        return None
    case = d.case
    was_open = case is not None and case.state in OPEN_STATES
    if d.settled is not None and not was_open:
        return None
    unpaid = d.outstanding or d.covered
    earliest = min(unpaid, key=lambda i: (i.opened_at, i.pk))
    owed = case.amount_overdue if d.settled is not None else overdue_by_currency(d.outstanding)
    currency, amount = max(owed.items(), key=lambda item: (item[1], item[0]), default=("", 0))
    retry = d.retry
    return CaseSituation(
        anchor=f"inv{min(d.case_pks)}",
        open=d.settled is None,
        opened_at=case.opened_at if case is not None and case.opened_at else d.now,
        track=d.track.value,
        decline_class=d.decline_class.value,
        class_known=not (retry is not None and retry.lookup),
        level=d.level.value,
        level_since=d.level_since,
        next_step=d.next_step,
        next_retry_at=retry.plan.at if retry is not None and retry.plan is not None else None,
        amount=amount,
        currency=currency,
        invoice=earliest.stripe_invoice_id,
        resolution=d.settled[0].value if d.settled is not None else "",
        was_bad_debt=d.snapshot.bad_debt is not None,
    )
