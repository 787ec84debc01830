"""Which messages the customer should get, and when: a function of the decision. Pure.

The engine plans every message it can already see coming (the payment failure now, the
next ladder step a few days before it, the card's expiry two weeks and three days before
it); each has a key that is its identity for good, so planning it again changes nothing.
Whether it is still true on its day, and whether the day's one message is free, is checked
when it is due (`dunning.notifications.sending`).
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunning.models import CustomerNotice
from dunning.policy import Level, NoticeRules, Track

Kind = CustomerNotice.Kind

# Most important first (the order of the kinds): the one that goes on a crowded day.
PRIORITY = {kind: index for index, kind in enumerate(Kind)}
# Decided once, they stand: no later recompute withdraws them (the case is closed by then).
SETTLED_KINDS = frozenset({Kind.RECOVERED, Kind.BAD_DEBT_PAID})
# A ladder step the customer is warned of (the end of the ladder has its own final notice).
WARNED_LEVELS = frozenset(
    {
        Level.PREMIUM_RESTRICTED,
        Level.READ_ONLY,
        Level.SUSPENDED,
        Level.UPGRADE_RESTRICTED,
        Level.UPGRADE_REVERTED,
    }
)
PAID_RESOLUTIONS = frozenset({"paid", "paid_out_of_band"})
# Stripe sends customer.source.expiring at the start of the expiry month: a payment method
# changed after that is the new card.
EXPIRY_NOTICE_WINDOW = timedelta(days=32)


@dataclass(frozen=True)
class Notice:
    key: str
    kind: str
    due_at: datetime
    facts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CaseSituation:
    """What the decision says about the account's case, in plain values."""

    anchor: str  # the case's identity for keys: its first invoice, stable for its life
    open: bool  # False: settled this recompute (paid, cancelled, reverted ...)
    opened_at: datetime
    track: str
    decline_class: str
    class_known: bool  # False while the decline code is still being looked up
    level: str
    level_since: datetime | None
    next_step: tuple[str, datetime] | None  # the next rung and when it takes effect
    next_retry_at: datetime | None
    amount: int
    currency: str
    invoice: str  # the earliest unpaid invoice (its hosted page is the action)
    resolution: str = ""
    was_bad_debt: bool = False


@dataclass(frozen=True)
class CardSituation:
    expiring_at: datetime | None  # the first moment the card no longer works
    payment_method_updated_at: datetime | None


def plan_notices(
    *, case: CaseSituation | None, card: CardSituation, now: datetime, rules: NoticeRules
) -> tuple[Notice, ...]:
    notices = list(_card_notices(card, now, rules))
    if case is not None:
        notices += _case_notices(case, now, rules)
    return tuple(sorted(notices, key=lambda n: (n.due_at, PRIORITY[n.kind], n.key)))


def _case_notices(case: CaseSituation, now: datetime, rules: NoticeRules) -> list[Notice]:
    upgrade = case.track == Track.UPGRADE
    money = {"amount": case.amount, "currency": case.currency, "invoice": case.invoice}
    if not case.open:
        if case.resolution not in PAID_RESOLUTIONS:
            return []  # cancelled, voided, reverted: nothing left to tell
        kind = Kind.BAD_DEBT_PAID if case.was_bad_debt else Kind.RECOVERED
        return [Notice(f"{kind}:{case.anchor}", kind, now, {**money, "upgrade": upgrade})]
    notices = []
    if case.class_known:
        notices.append(
            Notice(
                f"{Kind.PAYMENT_FAILED}:{case.anchor}:{case.decline_class}",
                Kind.PAYMENT_FAILED,
                case.opened_at,
                {
                    **money,
                    "decline_class": case.decline_class,
                    "next_retry_at": _iso(case.next_retry_at),
                    "upgrade": upgrade,
                },
            )
        )
    if case.next_step is not None:
        level, at = case.next_step
        if at > now and (level in WARNED_LEVELS or level == Level.CANCELLED):
            final = level == Level.CANCELLED
            lead = rules.final_lead if final else rules.step_lead
            # Steps closer together than the lead: warned as soon as the one before is in.
            earliest = case.level_since or case.opened_at
            kind = Kind.FINAL_NOTICE if final else Kind.STEP_AHEAD
            key = f"{kind}:{case.anchor}" if final else f"{kind}:{case.anchor}:{level}"
            facts = {**money, "level": str(level), "takes_effect_at": _iso(at), "upgrade": upgrade}
            if final:
                facts["cancels_at"] = _iso(at)
            notices.append(Notice(key, kind, max(at - lead, earliest), facts))
    return notices


def _card_notices(card: CardSituation, now: datetime, rules: NoticeRules) -> list[Notice]:
    """Each lead before the expiry; one whose day has passed only while no later one is
    due yet (an expiry learned late is announced once, not twice on the same day)."""
    expiring = card.expiring_at
    if expiring is None or expiring <= now:
        return []
    changed = card.payment_method_updated_at
    if changed is not None and changed >= expiring - EXPIRY_NOTICE_WINDOW:
        return []  # the customer gave a new card already
    days = sorted(rules.card_expiry_leads, reverse=True)
    due = [(lead, expiring - lead) for lead in days]
    passed = [lead for lead, at in due if at <= now]
    notices = []
    for lead, at in due:
        if at <= now and lead != passed[-1]:
            continue
        key = f"{Kind.CARD_EXPIRING}:{expiring.date().isoformat()}:{lead.days}"
        facts = {"expires_at": _iso(expiring), "days_left": lead.days}
        notices.append(Notice(key, Kind.CARD_EXPIRING, at, facts))
    return notices


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
