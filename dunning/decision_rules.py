"""The decision, as small named rules applied in one visible order (`RULE_ORDER`).

Each rule reads the snapshot and what the rules before it concluded, adds its line to the
explanation, and either narrows the decision or settles it outright (`Deliberation.settle`).
The explanation names the rule that decided. Pure: no I/O, no clock.
"""

from datetime import datetime, timedelta

from dunning.deliberation import Deliberation, is_upgrade, money_text, overdue_by_currency
from dunning.in_dunning import went_through_dunning
from dunning.ladder import PaymentHistory, consequence_level, describe_days
from dunning.models import BadDebtEpisode, CaseState, Resolution
from dunning.policy import LADDER_ORDER, Level, Policy, Track
from dunning.retries import (
    RetryDecision,
    declines_on_card,
    effective_class,
    plan_retry,
    worst_class,
)
from dunning.snapshot import InvoiceView, Snapshot

CANCELLED_SUBSCRIPTION = ("canceled", "incomplete_expired")


def membership(d: Deliberation) -> None:
    """Which invoices the case covers: those that went through dunning and joined no case
    yet, plus the open case's own. A resolved case never reopens."""
    snapshot = d.snapshot
    failed = {a.invoice_pk for a in snapshot.attempts if a.outcome == "failed"}
    entering = [
        i for i in snapshot.invoices if i.case_id is None and went_through_dunning(i, failed)
    ]
    d.case = snapshot.case
    if d.case is not None and d.case.state == CaseState.RESOLVED and entering:
        d.case = None
    d.covered = entering + [i for i in snapshot.invoices if d.case and i.case_id == d.case.pk]
    if not d.covered:
        d.note("no_failed_invoices", "no invoice is in dunning")
        d.settle(Resolution.NONE, Level.NONE)


def decline_class(d: Deliberation) -> None:
    """The case's class: the worst decline on the card a retry would use, since that card
    last changed (order-free: a later soft decline never hides an earlier fraud one)."""
    snapshot, pks = d.snapshot, d.case_pks
    failures = [a for a in snapshot.attempts if a.outcome == "failed" and a.invoice_pk in pks]
    card = snapshot.default_payment_method or (failures[-1].payment_method if failures else "")
    current = declines_on_card(failures, (), card, snapshot.payment_method_updated_at)
    d.decline_class = (
        worst_class(current, d.policy)
        if current
        else effective_class(failures[-1] if failures else None, d.policy)
    )


def subscription_cancelled(d: Deliberation) -> None:
    """Every subscription the unpaid invoices are for is cancelled: the case is over."""
    subscriptions = d.subscriptions
    status = d.snapshot.subscription_status
    if not subscriptions or any(status.get(s) not in CANCELLED_SUBSCRIPTION for s in subscriptions):
        return
    if all(is_upgrade(i) for i in d.outstanding) and d.written_off:
        # Stripe cancelled it on its own after an unpaid upgrade: not our bad debt either.
        resolution = Resolution.CANCELLED
    else:
        resolution = Resolution.WRITTEN_OFF if d.written_off else Resolution.CANCELLED
    d.note(
        "subscription_cancelled",
        f"resolved as {resolution.value}: the subscription was cancelled with "
        f"{len(d.outstanding)} invoice(s) unpaid",
        {"subscriptions": sorted(subscriptions)},
    )
    d.settle(resolution, Level.CANCELLED)


def nothing_outstanding(d: Deliberation) -> None:
    """Every invoice of the case is paid, voided or reverted."""
    if d.outstanding:
        return
    paid = [i for i in d.covered if i.status == "paid"]
    voided = [i for i in d.covered if i.status == "void"]
    if paid and all(i.paid_out_of_band for i in paid):
        resolution = Resolution.PAID_OUT_OF_BAND
    elif paid:
        resolution = Resolution.PAID
    elif voided and all(i.stripe_invoice_id in d.snapshot.reverted_invoices for i in voided):
        resolution = Resolution.UPGRADE_REVERTED
    else:
        resolution = Resolution.VOIDED
    d.note(
        "nothing_outstanding",
        f"resolved as {resolution.value}: every invoice of the case is settled",
        {i.stripe_invoice_id: i.status for i in d.covered},
    )
    d.settle(resolution, Level.NONE)


def track(d: Deliberation) -> None:
    """Which ladder: only upgrades unpaid (whatever Stripe marked them) touches the upgrade
    alone; a small amount never goes past premium features; else the base ladder, dated from
    the earliest unpaid base-plan invoice (an older unpaid upgrade never brings it forward)."""
    outstanding = d.outstanding
    base = [i for i in outstanding if not is_upgrade(i)]
    overdue = overdue_by_currency(outstanding)
    if not base:
        d.track = Track.UPGRADE
        d.ladder_start = min(i.opened_at for i in outstanding)
        d.note(
            "upgrade_only",
            "only upgrade/proration invoices are unpaid and the base plan is paid: only the "
            "upgrade is held back, never bad debt, never core access, never a cancellation",
            {"invoices": sorted(i.stripe_invoice_id for i in outstanding)},
        )
        return
    d.ladder_start = min(i.opened_at for i in base)
    small = d.policy.severity.small_amount_minor
    if all(amount <= small for amount in overdue.values()):
        d.track = Track.SMALL_AMOUNT
        d.note(
            "small_amount",
            f"small amount ({money_text(overdue)} minor units): no further than premium features "
            "before the end of the ladder",
            {"amount_overdue": overdue},
        )
    d.bad_debt_floor = any(not is_upgrade(i) for i in d.written_off)


def ladder(d: Deliberation) -> None:
    """The rung: by the age of the unpaid invoices and severity, one rung at a time."""
    case = d.case
    floor = Level.SUSPENDED if d.bad_debt_floor and d.track == Track.BASE else Level.NONE
    decision = consequence_level(
        track=d.track,
        start=d.ladder_start,
        now=d.now,
        decline_class=d.decline_class,
        history=PaymentHistory(d.snapshot.paid_invoices, d.snapshot.recent_cases),
        current_level=case.level if case else Level.NONE.value,
        current_since=case.level_since if case else None,
        floor=floor,
        policy=d.policy,
    )
    d.rung, d.level_since = decision.rung, decision.since
    d.review_at(decision.next_review_at)
    if decision.next_level is not None and decision.next_review_at is not None:
        d.next_step = (decision.next_level, decision.next_review_at)
    d.rules.append(decision.rule)
    if d.bad_debt_floor:
        d.note(
            "written_off",
            "bad debt: a base-plan invoice was marked uncollectible; the ladder climbs on to "
            "suspension and cancellation one rung at a time",
            {"invoices": sorted(i.stripe_invoice_id for i in d.written_off)},
        )


def support_hold(d: Deliberation) -> None:
    """Support paused the case or granted grace: the level does not rise until then. No
    message goes out during a pause, so the step it held back waits the notice lead after
    it ends: the customer hears of it before it takes effect."""
    case, now = d.case, d.now
    if case is None:
        return
    lead = d.policy.notices.step_lead
    paused_until = _later(case.paused_until, lead) if case.paused_until is not None else None
    paused = paused_until is not None and paused_until > now
    in_grace = case.grace_until is not None and case.grace_until > now
    held = Level(case.level) if case.level in LADDER_ORDER else Level.NONE
    if not (paused or in_grace) or LADDER_ORDER.index(d.level) <= LADDER_ORDER.index(held):
        return
    until, why = (
        (paused_until, case.pause_reason) if paused else (case.grace_until, case.grace_reason)
    )
    if paused and in_grace and case.grace_until > paused_until:
        until, why = case.grace_until, case.grace_reason
    d.note(
        "support_hold",
        f"level held at {case.level} by support until {until:%Y-%m-%d %H:%M} UTC: {why}"
        + (f" (the pause, then {describe_days(lead)} of notice)" if until == paused_until else ""),
        {"would_be": d.level.value, "until": until.isoformat()},
    )
    d.rung, d.level_since = d.policy.rung(held), case.level_since
    d.review_at(until)
    rungs = d.policy.ladders[d.track]
    above = [r.level for r in rungs if LADDER_ORDER.index(r.level) > LADDER_ORDER.index(held)]
    d.next_step = (above[0], until) if above else None


def _later(moment: datetime, span: timedelta) -> datetime:
    """`moment + span`, or `moment` itself at the end of time (a pause with no end)."""
    try:
        return moment + span
    except OverflowError:
        return moment


def retry(d: Deliberation) -> None:
    """The next charge of the earliest unpaid invoice (one invoice at a time)."""
    snapshot, case = d.snapshot, d.case
    scheduled = snapshot.scheduled_retry
    if scheduled is not None and scheduled.running:
        d.retry = RetryDecision(
            None, False, "a retry is running now", {"invoice": scheduled.stripe_invoice_id}
        )
    elif d.unpaid:
        d.retry = next_retry(snapshot, d.unpaid, d.now, d.policy)
        d.review_at(d.retry.review_at)
    if case is not None and case.paused_until is not None and case.paused_until > d.now:
        d.retry = RetryDecision(
            None,
            d.retry is not None and d.retry.waits_for_customer,
            f"retries paused by support until {case.paused_until:%Y-%m-%d %H:%M} UTC: "
            f"{case.pause_reason}",
            {"paused_until": case.paused_until.isoformat()},
        )
        d.review_at(case.paused_until)
    if d.retry is not None:
        d.note("retry", d.retry.reason, d.retry.facts)


def next_retry(
    snapshot: Snapshot, unpaid: list[InvoiceView], now: datetime, policy: Policy
) -> RetryDecision:
    invoice = min(unpaid, key=lambda i: (i.opened_at, i.pk))
    failures = [
        a for a in snapshot.attempts if a.outcome == "failed" and a.invoice_pk == invoice.pk
    ]
    return plan_retry(
        invoice=invoice,
        failures=failures,
        card=snapshot.default_payment_method or (failures[-1].payment_method if failures else ""),
        # The window's attempts on any invoice, and the case's own however old: a
        # never-retry decline binds for good.
        card_history=tuple(
            sorted(
                set(snapshot.card_history) | set(snapshot.attempts),
                key=lambda a: (a.attempted_at, a.pk),
            )
        ),
        card_updated_at=snapshot.payment_method_updated_at,
        lookups_asked=snapshot.lookups_asked,
        lookups_ended=snapshot.lookups_ended,
        now=now,
        policy=policy,
    )


def end_of_ladder(d: Deliberation) -> None:
    """The last rung: cancel the subscription, or revert the upgrade and void its invoice.
    A side effect that Stripe refused is a fact: not asked again without a new reason."""
    rung, snapshot = d.rung, d.snapshot
    if rung is None or not (rung.cancels or rung.reverts_upgrade):
        return
    subscriptions = d.subscriptions
    refused = snapshot.cancel_refused if rung.cancels else snapshot.revert_refused
    wanted = frozenset(s for s in subscriptions if s not in refused)
    if rung.cancels:
        d.cancel = wanted
        action = "the subscription is cancelled through its lifecycle"
    else:
        d.revert = wanted
        action = "the upgrade is reverted (no proration) and its unpaid invoice voided"
    d.note(
        "end_of_ladder",
        f"the ladder has run its course: {action}",
        {"subscriptions": sorted(wanted)},
    )
    if refused and subscriptions & set(refused):
        d.note(
            "side_effect_refused",
            "Stripe refused it; not asked again until support re-drives the case: "
            + "; ".join(f"{s}: {refused[s]}" for s in sorted(subscriptions & set(refused))),
            {"refused": {s: refused[s] for s in sorted(subscriptions & set(refused))}},
        )


def case_state(d: Deliberation) -> None:
    if d.bad_debt_floor or (d.rung is not None and d.rung.bad_debt):
        d.state = CaseState.ESCALATED
    elif d.retry is not None and d.retry.waits_for_customer:
        d.state = CaseState.AWAITING_CUSTOMER
    else:
        d.state = CaseState.RETRYING


def bad_debt_reason(d: Deliberation) -> str | None:
    if d.bad_debt_floor:
        return BadDebtEpisode.Reason.MARKED_UNCOLLECTIBLE
    if d.rung is not None and d.rung.bad_debt:
        return BadDebtEpisode.Reason.LADDER_SUSPENDED
    return None


# The order the rules are applied in; a rule that settles the case ends the decision.
RULE_ORDER = (
    membership,
    decline_class,
    subscription_cancelled,
    nothing_outstanding,
    track,
    ladder,
    support_hold,
    retry,
    end_of_ladder,
    case_state,
)
