"""A book of subscription accounts and the hidden truth of what each customer will do.

Everything is drawn up front from one `random.Random(seed)`, account by account, so both
worlds (the legacy model and this service) face the same customers. Times are seconds
since the start of the run.

A customer's card goes through *spells*: from a failed charge until the cause goes away,
every off-session charge on it is declined with the same code. What ends a spell is the
customer's business, decided here and hidden from both policies:

| class | a spell ends when | then |
|---|---|---|
| soft | the funds arrive (`soft_clears` of them, after a few days) | any later charge succeeds |
| hard | the customer adds a new card (`hard_updates_card`) | charges on the new card succeed |
| fraud | the customer comes back with another card and pays on-session | open invoices are paid |
| auth | the customer authenticates on-session | open invoices are paid |

A charge made during a spell fails with the spell's code; otherwise it fails with the
probability of its kind (renewal or upgrade) and starts a new spell. Each failed invoice
also carries what finance or the customer may do to it if it is still open by then: pay it
out of band, void it, mark it uncollectible (renewals; upgrades in the hard case below).

The hard cases, drawn from a stream of their own (`hard_rng`, seeded from the book's seed)
so that with their rates at 0 the book is the one drawn before they existed:

- uncollectible upgrade: Stripe marks a failed upgrade invoice uncollectible 7-21 days on
  (both worlds meet it);
- late charge events: the first attempt's charge.failed and payment_intent.payment_failed
  come 1-12 h after its invoice.payment_failed (the service; every decline class);
- missing charge events: they never come, the decline code is only to be had from the
  gateway (the service);
- old invoice: an invoice that failed 20-60 days before the first event about it arrives,
  in the run's first week (both worlds: the legacy model's retry clock starts then too).
"""

import math
import random
from dataclasses import replace

from simulation.book import (
    CYCLE_DAYS,
    DAY,
    LATE,
    MISSING,
    ON_TIME,
    AccountTruth,
    Book,
    Charge,
    Fate,
    Trouble,
)
from simulation.mix import Mix

SOFT_CODES = {
    "insufficient_funds": 0.62,
    "do_not_honor": 0.15,
    "generic_decline": 0.13,
    "processing_error": 0.06,
    "try_again_later": 0.04,
}
HARD_CODES = {
    "expired_card": 0.60,
    "transaction_not_allowed": 0.10,
    "invalid_account": 0.10,
    "do_not_try_again": 0.10,
    "revocation_of_authorization": 0.10,
}
FRAUD_CODES = {
    "fraudulent": 0.40,
    "stolen_card": 0.20,
    "lost_card": 0.20,
    "pickup_card": 0.10,
    "restricted_card": 0.10,
}
AUTH_CODES = {"authentication_required": 1.0}
CODES = {"soft": SOFT_CODES, "hard": HARD_CODES, "fraud": FRAUD_CODES, "auth": AUTH_CODES}

PLANS = {900: 0.20, 2900: 0.35, 4900: 0.25, 9900: 0.15, 29900: 0.05}
SMALL_PLAN = 500
PLAN_LADDER = sorted(PLANS)

OLD_INVOICE_AGE_DAYS = (20.0, 60.0)  # age of the invoice when the first event arrives
OLD_INVOICE_SEEN_WITHIN_DAYS = 7.0  # the go-live's first week


def _weighted(rng: random.Random, weights: dict) -> object:
    total = sum(weights.values())
    pick = rng.random() * total
    for key, weight in weights.items():
        pick -= weight
        if pick < 0:
            return key
    return key


def _days(rng: random.Random, low: float, high: float, mode: float) -> float:
    return rng.triangular(low, max(high, low), min(max(mode, low), high)) * DAY


def draw_trouble(rng: random.Random, mix: Mix, failure_rate: float) -> Trouble | None:
    if rng.random() >= failure_rate:
        return None
    kind = _weighted(rng, mix.class_weights)
    code = _weighted(rng, CODES[kind])
    ends: float | None = None
    if kind == "soft" and rng.random() < mix.soft_clears:
        ends = _days(rng, 0.5, mix.soft_clear_days_max, mix.soft_clear_days_mode)
    elif kind == "hard" and rng.random() < mix.hard_updates_card:
        ends = _days(rng, 0.5, mix.hard_update_days_max, mix.hard_update_days_mode)
    elif kind == "fraud" and rng.random() < mix.fraud_pays_on_session:
        ends = _days(rng, 1, 30, 5)
    elif kind == "auth" and rng.random() < mix.auth_completes:
        ends = _days(rng, 0.1, mix.auth_days_max, mix.auth_days_mode)
    return Trouble(kind, code, ends)


def draw_fate(rng: random.Random, mix: Mix, *, renewal: bool) -> Fate:
    oob = _days(rng, 1, 25, 5) if rng.random() < mix.out_of_band_rate else None
    void = _days(rng, 1, 20, 3) if rng.random() < mix.void_rate else None
    uncollectible = None
    if renewal and rng.random() < mix.uncollectible_rate:
        uncollectible = _days(rng, 25, 45, 30)
    return Fate(oob, void, uncollectible)


def hard_rng(seed: int) -> random.Random:
    """The hard cases' own stream: a string seed is hashed (SHA-512), the same everywhere."""
    return random.Random(f"hard-cases/{seed}")


def draw_charge_event(hard: random.Random, mix: Mix) -> tuple[str, float]:
    """How the first attempt's charge events travel, if it fails: (mode, delay seconds)."""
    pick = hard.random()
    delay = hard.uniform(1.0, mix.late_charge_event_hours_max) * 3600
    if pick < mix.late_charge_event_rate:
        return LATE, delay
    if pick < mix.late_charge_event_rate + mix.missing_charge_event_rate:
        return MISSING, 0.0
    return ON_TIME, 0.0


def with_hard_cases(hard: random.Random, mix: Mix, charge: Charge) -> Charge:
    """The charge with its delivery drawn, and for an upgrade maybe Stripe's write-off."""
    mode, delay = draw_charge_event(hard, mix)
    write_off = hard.random() < mix.upgrade_uncollectible_rate
    after = _days(hard, 7, 21, 14)
    fate = charge.fate
    if charge.kind == "upgrade" and write_off:
        fate = replace(fate, uncollectible_after=after)
    return replace(charge, fate=fate, charge_event=mode, charge_event_delay=delay)


def draw_old_invoice(
    hard: random.Random, mix: Mix, name: str, plan: int, days: int
) -> Charge | None:
    """A renewal invoice that failed before the run and is first heard of 20-60 days later,
    in the run's first week: a go-live on a book that already has open invoices."""
    old = hard.random() < mix.old_invoice_rate
    age = hard.uniform(*OLD_INVOICE_AGE_DAYS) * DAY
    seen = hard.uniform(0.0, min(OLD_INVOICE_SEEN_WITHIN_DAYS, max(days - 1, 0))) * DAY
    if not old:
        return None
    trouble = draw_trouble(hard, mix, 1.0)
    assert trouble is not None  # a failure rate of 1 always fails
    if trouble.ends_after is not None:
        # The customer's clock runs from the go-live, when anyone first asks them to act.
        trouble = replace(trouble, ends_after=age + trouble.ends_after)
    fate = draw_fate(hard, mix, renewal=True)
    return Charge(f"in_{name}o00", "renewal", seen - age, plan, trouble, fate, first_seen_after=age)


def upgrade_amount(plan: int, days_into_cycle: float) -> int:
    """Proration to the next plan up (or half the plan again at the top) for the rest of
    the cycle, in minor units."""
    higher = [price for price in PLAN_LADDER if price > plan]
    difference = (higher[0] - plan) if higher else plan // 2
    remaining = max(CYCLE_DAYS - days_into_cycle, 1) / CYCLE_DAYS
    return max(100, int(round(difference * remaining, -1)))


def draw_account(
    rng: random.Random, mix: Mix, index: int, days: int, hard: random.Random
) -> AccountTruth:
    plan = SMALL_PLAN if rng.random() < mix.small_plan_share else _weighted(rng, PLANS)
    tenure = min(int(rng.expovariate(1 / mix.tenure_mean_months)), 120)
    first = rng.uniform(0, CYCLE_DAYS) * DAY
    name = f"sim{index:06d}"
    charges: list[Charge] = []
    for cycle in range(math.ceil(days / CYCLE_DAYS) + 1):
        at = first + cycle * CYCLE_DAYS * DAY
        trouble = draw_trouble(rng, mix, mix.renewal_failure_rate)
        fate = draw_fate(rng, mix, renewal=True)
        if at < days * DAY:
            renewal = Charge(f"in_{name}r{cycle:02d}", "renewal", at, plan, trouble, fate)
            charges.append(with_hard_cases(hard, mix, renewal))
        if rng.random() < mix.upgrade_rate:
            into = rng.uniform(3, 25)
            up_at = at + into * DAY
            trouble = draw_trouble(rng, mix, mix.upgrade_failure_rate)
            fate = draw_fate(rng, mix, renewal=False)
            if up_at < days * DAY:
                upgrade = Charge(
                    f"in_{name}u{cycle:02d}",
                    "upgrade",
                    up_at,
                    upgrade_amount(plan, into),
                    trouble,
                    fate,
                )
                charges.append(with_hard_cases(hard, mix, upgrade))
    if (old := draw_old_invoice(hard, mix, name, plan, days)) is not None:
        charges.append(old)
    return AccountTruth(
        index=index,
        customer=f"cus_{name}",
        subscription=f"sub_{name}",
        plan=plan,
        tenure_months=tenure,
        charges=tuple(sorted(charges, key=lambda c: (c.at, c.invoice_id))),
    )


def generate(*, accounts: int, days: int, seed: int, mix: Mix | None = None) -> Book:
    """The whole book, drawn from `random.Random(seed)`: same arguments, same book."""
    mix = mix or Mix()
    rng = random.Random(seed)
    if mix.am_outage_day >= 0:
        outage_start = mix.am_outage_day * DAY
    else:
        outage_start = rng.uniform(days / 3, 2 * days / 3) * DAY
    # The outage ends before the run does, so that convergence can be checked at the end.
    outage_end = min(outage_start + mix.am_outage_hours * 3600, max(days - 1, 0) * DAY)
    hard = hard_rng(seed)
    book = tuple(draw_account(rng, mix, index, days, hard) for index in range(accounts))
    outage = (outage_start, max(outage_start, outage_end))
    return Book(seed, days, mix, book, outage, delivery_seed=rng.getrandbits(64))
