"""The pure decision: from a snapshot of the stores, the state the account should be in.

No I/O and no clock: `now` and the policy come in as arguments, so the same inputs
always give the same answer, and every conclusion carries the rules and facts behind it.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime

from dunning.decision_rules import RULE_ORDER, bad_debt_reason
from dunning.deliberation import Deliberation, overdue_by_currency
from dunning.in_dunning import went_through_dunning
from dunning.models import CaseState, Resolution
from dunning.notifications.plan import Notice, plan_notices
from dunning.notifications.situation import card_situation, case_situation
from dunning.policy import Level, Policy
from dunning.retries import RetryPlan
from dunning.rules import Rule
from dunning.snapshot import Snapshot

__all__ = ["Desired", "DesiredCase", "Rule", "compute", "went_through_dunning"]


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
    level_since: datetime | None = None
    # Decline look-ups to ask Stripe for ("invoice:attempt"), while a decline code is unknown.
    lookups: frozenset[str] = frozenset()
    # Subscriptions whose unpaid upgrade is reverted (the end of the upgrade ladder).
    revert_upgrades: frozenset[str] = frozenset()

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
    # Every message the customer should get, as far as can be seen now.
    notices: tuple[Notice, ...] = ()

    def summary(self) -> str:
        return "; ".join(rule.conclusion for rule in self.rules)

    @property
    def decided_by(self) -> str:
        return self.rules[-1].name if self.rules else ""


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
        revert_upgrades=frozenset(),
    )
    rule = Rule(
        "shadow",
        f"shadow mode (rollout stage {snapshot.rollout_stage}): level {case.level.value} "
        "recorded, consequences not applied",
        would,
    )
    return Desired(
        shadowed,
        {},
        "good",
        (*desired.rules, rule),
        enforced=False,
        notices=desired.notices,
    )


def decide(snapshot: Snapshot, now: datetime, policy: Policy) -> Desired:
    d = Deliberation(snapshot=snapshot, now=now, policy=policy)
    desired = _deliberate(d)
    notices = plan_notices(
        case=case_situation(d), card=card_situation(snapshot), now=now, rules=policy.notices
    )
    return replace(desired, notices=notices)


def _deliberate(d: Deliberation) -> Desired:
    for rule in RULE_ORDER:
        rule(d)
        if d.settled is not None:
            return _settle(d)
    case = d.case
    rung = d.rung
    desired = DesiredCase(
        state=d.state,
        resolution=Resolution.NONE,
        level=rung.level,
        decline_class=d.decline_class.value,
        earliest_unpaid_at=min(i.opened_at for i in d.outstanding),
        amount_overdue=overdue_by_currency(d.outstanding),
        next_review_at=d.next_review_at,
        invoice_pks=d.case_pks,
        case_pk=case.pk if case else None,
        retry=d.retry.plan if d.retry else None,
        bad_debt=bad_debt_reason(d),
        cancel_subscriptions=d.cancel,
        products=d.subscriptions,
        level_since=d.level_since,
        lookups=frozenset({d.retry.lookup}) if d.retry and d.retry.lookup else frozenset(),
        revert_upgrades=d.revert,
    )
    restrictions = {code: rung.level.value for code in rung.restricts}
    return Desired(desired, restrictions, rung.standing, tuple(d.rules))


def _settle(d: Deliberation) -> Desired:
    """No case, or money in, written off, reverted or cancelled: lift what was imposed, and
    stay `lifting` while Account Management has not acknowledged the new standing or side
    effects are in flight."""
    snapshot, rules = d.snapshot, d.rules
    resolution, level = d.settled
    if resolution == Resolution.NONE:
        return _no_case(snapshot, rules, d.policy)
    standing = "cancelled" if level == Level.CANCELLED else "good"
    # In shadow mode no standing is ever sent: there is nothing to wait for.
    awaited = standing if snapshot.enforced else "good"
    case = d.case
    already_resolved = case is not None and case.state == CaseState.RESOLVED
    in_flight = not already_resolved and (
        snapshot.side_effects_in_flight > 0 or snapshot.standing_acknowledged != awaited
    )
    if in_flight:
        rules.append(
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
        decline_class=d.decline_class.value,
        earliest_unpaid_at=min(i.opened_at for i in (d.outstanding or d.covered)),
        amount_overdue={},
        next_review_at=None,
        invoice_pks=d.case_pks,
        case_pk=case.pk if case else None,
        level_since=case.level_since if case and case.level == level.value else d.now,
    )
    rung = d.policy.rung(level)
    restrictions = {code: level.value for code in rung.restricts} if rung.cancels else {}
    return Desired(desired, restrictions, standing, tuple(rules))


def _no_case(snapshot: Snapshot, rules: list[Rule], policy: Policy) -> Desired:
    if snapshot.standing_requested == "cancelled":
        # Dunning cancelled this account; only a new failure opens a new case.
        rules.append(
            Rule("stays_cancelled", "no invoice is in dunning; the account stays cancelled")
        )
        restricts = policy.rung(Level.CANCELLED).restricts
        return Desired(
            None, dict.fromkeys(restricts, Level.CANCELLED.value), "cancelled", tuple(rules)
        )
    return Desired(None, {}, "good", tuple(rules))
