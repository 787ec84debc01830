"""The pure decision: from a snapshot of the stores, the state the account should be in.

No I/O and no clock: `now` and the policy come in as arguments, so the same inputs
always give the same answer, and every conclusion carries the rules and facts behind it.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime

from dunning.ladder import PaymentHistory, consequence_level
from dunning.models import BadDebtEpisode, CaseState, Resolution
from dunning.policy import LADDER_ORDER, DeclineClass, Level, Policy
from dunning.retries import RetryDecision, RetryPlan, effective_class, plan_retry
from dunning.rules import Rule
from dunning.snapshot import CaseView, InvoiceView, Snapshot
from entitlements.policy import restrictions_for_level

__all__ = ["Desired", "DesiredCase", "Rule", "compute"]

UPGRADE_REASON = "subscription_update"
CANCELLED_SUBSCRIPTION = ("canceled", "incomplete_expired")


@dataclass(frozen=True)
class DesiredCase:
    state: CaseState
    resolution: Resolution
    level: Level
    decline_class: str
    earliest_unpaid_at: datetime | None
    amount_overdue: dict[str, int]
    next_review_at: datetime | None
    invoice_pks: frozenset[int]  # every invoice the case covers
    case_pk: int | None = None  # the case to update; None opens a new one
    retry: RetryPlan | None = None
    # Bad debt: the reason it is (or stays) open, None when the account is not in it.
    bad_debt: str | None = None
    # Subscriptions to cancel through their lifecycle (the end of the ladder).
    cancel_subscriptions: frozenset[str] = frozenset()
    # The subscriptions (products) the unpaid invoices are for.
    products: frozenset[str] = frozenset()
    # Outside the rollout gate: what would have been applied (see `gate`).
    shadow: dict = field(default_factory=dict)

    @property
    def next_retry_at(self) -> datetime | None:
        return self.retry.at if self.retry else None


@dataclass(frozen=True)
class Desired:
    case: DesiredCase | None
    restrictions: dict[str, str]  # code -> level
    standing: str
    rules: tuple[Rule, ...] = field(default=())
    enforced: bool = True  # False outside the rollout gate (shadow mode)

    def summary(self) -> str:
        return "; ".join(rule.conclusion for rule in self.rules)


def went_through_dunning(invoice: InvoiceView, failed: set[int]) -> bool:
    """An invoice whose collection failed at least once: unpaid after an attempt,
    written off, or settled only after a failed attempt."""
    if invoice.status == "uncollectible":
        return True
    failed_once = invoice.payment_failed or invoice.pk in failed
    if invoice.status == "open":
        return invoice.attempt_count > 0 or failed_once
    if invoice.status in ("paid", "void"):
        return invoice.attempt_count > 1 or failed_once
    return False


def compute(snapshot: Snapshot, now: datetime, policy: Policy) -> Desired:
    return gate(decide(snapshot, now, policy), snapshot)


def gate(desired: Desired, snapshot: Snapshot) -> Desired:
    """Outside the rollout gate, keep the decision but apply none of its consequences:
    no restrictions, no standing change, no cancellation (shadow mode)."""
    case = desired.case
    if snapshot.enforced:
        return desired
    if case is None:
        return replace(desired, enforced=False)
    would = {
        "restrictions": sorted(desired.restrictions),
        "standing": desired.standing,
        "cancel": sorted(case.cancel_subscriptions),
    }
    shadowed = replace(
        case,
        shadow=would
        if would["restrictions"] or would["cancel"] or would["standing"] != "good"
        else {},
        cancel_subscriptions=frozenset(),
    )
    rule = Rule(
        "shadow",
        f"shadow mode (rollout stage {snapshot.rollout_stage}): level {case.level.value} "
        "recorded, consequences not applied",
        would,
    )
    return Desired(shadowed, {}, "good", (*desired.rules, rule), enforced=False)


def decide(snapshot: Snapshot, now: datetime, policy: Policy) -> Desired:
    rules: list[Rule] = []
    failed_pks = {a.invoice_pk for a in snapshot.attempts if a.outcome == "failed"}
    entering = [
        i for i in snapshot.invoices if i.case_id is None and went_through_dunning(i, failed_pks)
    ]
    case = snapshot.case
    if case is not None and case.state == CaseState.RESOLVED and entering:
        case = None  # a resolved case never reopens: new failures open a new case
    covered = entering + [i for i in snapshot.invoices if case and i.case_id == case.pk]
    if not covered:
        return _no_case(snapshot, rules)

    unpaid = [i for i in covered if i.status == "open"]
    written_off = [i for i in covered if i.status == "uncollectible"]
    outstanding = unpaid + written_off
    case_pks = frozenset(i.pk for i in covered)
    failures = [a for a in snapshot.attempts if a.outcome == "failed" and a.invoice_pk in case_pks]
    decline_class = effective_class(failures[-1] if failures else None, policy)
    earliest = min(i.opened_at for i in (outstanding or covered))
    settle = _Settle(snapshot, rules, case_pks, decline_class, earliest, case)

    subscriptions = {i.subscription_id for i in outstanding if i.subscription_id}
    if (
        outstanding
        and subscriptions
        and all(
            snapshot.subscription_status.get(s) in CANCELLED_SUBSCRIPTION for s in subscriptions
        )
    ):
        resolution = Resolution.WRITTEN_OFF if written_off else Resolution.CANCELLED
        rules.append(
            Rule(
                "subscription_cancelled",
                f"resolved as {resolution.value}: the subscription was cancelled "
                f"with {len(outstanding)} invoice(s) unpaid",
                {"subscriptions": sorted(subscriptions)},
            )
        )
        return settle(resolution, Level.CANCELLED)

    if not outstanding:
        paid = [i for i in covered if i.status == "paid"]
        if paid and all(i.paid_out_of_band for i in paid):
            resolution = Resolution.PAID_OUT_OF_BAND
        elif paid:
            resolution = Resolution.PAID
        else:
            resolution = Resolution.VOIDED
        rules.append(
            Rule(
                "nothing_outstanding",
                f"resolved as {resolution.value}: every invoice of the case is settled",
                {i.stripe_invoice_id: i.status for i in covered},
            )
        )
        return settle(resolution, Level.NONE)

    overdue: dict[str, int] = {}
    for invoice in outstanding:
        overdue[invoice.currency] = overdue.get(invoice.currency, 0) + invoice.amount_remaining

    # The ladder runs from the earliest unpaid invoice for the base plan: an older unpaid
    # upgrade only ever holds back the upgrade, it never brings the base plan's steps forward.
    base = [i for i in outstanding if i.billing_reason != UPGRADE_REASON]
    ladder_start = min(i.opened_at for i in base) if base else earliest
    next_review_at = None
    if written_off:
        # Bad debt at once; the ladder still runs on to cancellation (no limbo).
        ladder = consequence_level(
            earliest_unpaid_at=ladder_start,
            now=now,
            decline_class=decline_class,
            overdue=overdue,
            history=PaymentHistory(snapshot.paid_invoices, snapshot.recent_cases),
            policy=policy,
        )
        level = Level.CANCELLED if ladder.level == Level.CANCELLED else Level.SUSPENDED
        next_review_at = ladder.next_review_at
        rules.append(
            Rule(
                "written_off",
                f"level {level.value} (bad debt): invoice(s) marked uncollectible",
                {"invoices": sorted(i.stripe_invoice_id for i in written_off)},
            )
        )
    elif all(i.billing_reason == UPGRADE_REASON for i in unpaid):
        level = Level.UPGRADE_RESTRICTED
        rules.append(
            Rule(
                "upgrade_only",
                "level upgrade_restricted: only upgrade/proration invoices are unpaid, "
                "the base plan is paid, so only the upgrade is held back",
                {"invoices": sorted(i.stripe_invoice_id for i in unpaid)},
            )
        )
    else:
        ladder = consequence_level(
            earliest_unpaid_at=ladder_start,
            now=now,
            decline_class=decline_class,
            overdue=overdue,
            history=PaymentHistory(snapshot.paid_invoices, snapshot.recent_cases),
            policy=policy,
        )
        level, next_review_at = ladder.level, ladder.next_review_at
        rules.append(ladder.rule)

    paused = case is not None and case.paused_until is not None and case.paused_until > now
    in_grace = case is not None and case.grace_until is not None and case.grace_until > now
    if (paused or in_grace) and LADDER_ORDER.index(level) > LADDER_ORDER.index(Level(case.level)):
        until, why = (
            (case.paused_until, case.pause_reason)
            if paused
            else (case.grace_until, case.grace_reason)
        )
        rules.append(
            Rule(
                "support_hold",
                f"level held at {case.level} by support until {until:%Y-%m-%d %H:%M} UTC: {why}",
                {"would_be": level.value, "until": until.isoformat()},
            )
        )
        level = Level(case.level)
        next_review_at = min(at for at in (next_review_at, until) if at is not None)

    retry = _plan_retry(snapshot, unpaid, policy)
    if paused:
        retry = RetryDecision(
            None,
            retry is not None and retry.waits_for_customer,
            f"retries paused by support until {case.paused_until:%Y-%m-%d %H:%M} UTC: "
            f"{case.pause_reason}",
            {"paused_until": case.paused_until.isoformat()},
        )
        next_review_at = min(at for at in (next_review_at, case.paused_until) if at is not None)
    if retry is not None:
        rules.append(Rule("retry", retry.reason, retry.facts))

    cancel: frozenset[str] = frozenset()
    if level == Level.CANCELLED:
        cancel = frozenset(subscriptions)
        rules.append(
            Rule(
                "end_of_ladder",
                "the ladder has run its course: the subscription is cancelled through its "
                "lifecycle",
                {"subscriptions": sorted(cancel)},
            )
        )
    if level in (Level.SUSPENDED, Level.CANCELLED):
        state = CaseState.ESCALATED
    elif retry is not None and retry.waits_for_customer:
        state = CaseState.AWAITING_CUSTOMER
    else:
        state = CaseState.RETRYING

    desired = DesiredCase(
        state=state,
        resolution=Resolution.NONE,
        level=level,
        decline_class=decline_class.value,
        earliest_unpaid_at=earliest,
        amount_overdue=overdue,
        next_review_at=next_review_at,
        invoice_pks=case_pks,
        case_pk=case.pk if case else None,
        retry=retry.plan if retry else None,
        bad_debt=_bad_debt_reason(level, written_off),
        cancel_subscriptions=cancel,
        products=frozenset(subscriptions),
    )
    return Desired(desired, _restrictions(level), policy.standing[level], tuple(rules))


def _bad_debt_reason(level: Level, written_off: list[InvoiceView]) -> str | None:
    if written_off:
        return BadDebtEpisode.Reason.MARKED_UNCOLLECTIBLE
    if level in (Level.SUSPENDED, Level.CANCELLED):
        return BadDebtEpisode.Reason.LADDER_SUSPENDED
    return None


def _no_case(snapshot: Snapshot, rules: list[Rule]) -> Desired:
    if snapshot.standing_requested == "cancelled":
        # Dunning cancelled this account; only a new failure opens a new case.
        rules.append(
            Rule("stays_cancelled", "no invoice is in dunning; the account stays cancelled")
        )
        return Desired(None, _restrictions(Level.CANCELLED), "cancelled", tuple(rules))
    rules.append(Rule("no_failed_invoices", "no invoice is in dunning"))
    return Desired(None, {}, "good", tuple(rules))


def _plan_retry(
    snapshot: Snapshot, unpaid: list[InvoiceView], policy: Policy
) -> RetryDecision | None:
    """Plan the next retry of the earliest unpaid invoice (one invoice at a time)."""
    scheduled = snapshot.scheduled_retry
    if scheduled is not None and scheduled.running:
        plan = RetryPlan(scheduled.stripe_invoice_id, scheduled.attempt_number, scheduled.at)
        return RetryDecision(
            plan, False, "a retry is running now", {"invoice": plan.stripe_invoice_id}
        )
    if not unpaid:
        return None
    invoice = min(unpaid, key=lambda i: (i.opened_at, i.pk))
    failures = [
        a for a in snapshot.attempts if a.outcome == "failed" and a.invoice_pk == invoice.pk
    ]
    card = failures[-1].payment_method if failures else ""
    return plan_retry(
        invoice=invoice,
        failures=failures,
        card_attempts_in_window=snapshot.card_attempts.get(card, 0) if card else 0,
        payment_method_updated_at=snapshot.payment_method_updated_at,
        policy=policy,
    )


def _restrictions(level: Level) -> dict[str, str]:
    return {code: level.value for code in restrictions_for_level(level.value)}


@dataclass(frozen=True)
class _Settle:
    """Money in, written off or cancelled: lift what was imposed, and stay `lifting` while
    Account Management has not acknowledged the new standing or side effects are in flight."""

    snapshot: Snapshot
    rules: list[Rule]
    case_pks: frozenset[int]
    decline_class: DeclineClass
    earliest: datetime
    case: CaseView | None

    def __call__(self, resolution: Resolution, level: Level) -> Desired:
        snapshot = self.snapshot
        standing = "cancelled" if level == Level.CANCELLED else "good"
        already_resolved = self.case is not None and self.case.state == CaseState.RESOLVED
        in_flight = not already_resolved and (
            snapshot.side_effects_in_flight > 0 or snapshot.standing_acknowledged != standing
        )
        if in_flight:
            self.rules.append(
                Rule(
                    "lifting",
                    "lifting: consequences lifted, waiting for side effects to complete",
                    {
                        "side_effects_in_flight": snapshot.side_effects_in_flight,
                        "standing_acknowledged": snapshot.standing_acknowledged,
                    },
                )
            )
        desired = DesiredCase(
            state=CaseState.LIFTING if in_flight else CaseState.RESOLVED,
            resolution=resolution,
            level=level,
            decline_class=self.decline_class.value,
            earliest_unpaid_at=self.earliest,
            amount_overdue={},
            next_review_at=None,
            invoice_pks=self.case_pks,
            case_pk=self.case.pk if self.case else None,
        )
        restrictions = _restrictions(level) if level == Level.CANCELLED else {}
        return Desired(desired, restrictions, standing, tuple(self.rules))
