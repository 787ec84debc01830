"""The mix of customer behaviours the simulator draws a book from, with its defaults.

Every rate is a default, overridable with `--mix key=value`; `manage.py simulate
--show-mix` prints the table below as markdown. None of them is this company's measured
figure: where a public source describes the behaviour it is named, and every number is
otherwise an assumption chosen to be plausible for a card-billed SaaS business, and says
so. The report is about the *difference* between the legacy policy and this service on
the same customers, which holds across reasonable mixes (try some).

Plans: 5 USD a month for `small_plan_share` of the accounts (at the ladder's small-amount
cap), the others 9, 29, 49, 99 and 299 USD in the proportions 20/35/25/15/5 (assumption).
Renewals every 30 days from a day drawn uniformly in the first cycle. Decline codes within
a class: see `generator.CODES` (assumption, `insufficient_funds` and `expired_card` first;
classes from `dunning/policy_data/decline_codes.csv`). The legacy cadence is not part of
the mix: it is the legacy system's (see `legacy`).
"""

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Mix:
    renewal_failure_rate: float = 0.08
    upgrade_rate: float = 0.05
    upgrade_failure_rate: float = 0.12
    soft_share: float = 0.70
    hard_share: float = 0.17
    fraud_share: float = 0.05
    auth_share: float = 0.08
    soft_clears: float = 0.70
    soft_clear_days_mode: float = 2.0
    soft_clear_days_max: float = 30.0
    hard_updates_card: float = 0.55
    hard_update_days_mode: float = 3.0
    hard_update_days_max: float = 30.0
    fraud_pays_on_session: float = 0.15
    auth_completes: float = 0.60
    auth_days_mode: float = 1.0
    auth_days_max: float = 14.0
    out_of_band_rate: float = 0.03
    void_rate: float = 0.02
    uncollectible_rate: float = 0.02
    duplicate_rate: float = 0.03
    delayed_rate: float = 0.05
    am_outage_hours: float = 6.0
    am_outage_day: float = -1.0
    small_plan_share: float = 0.05
    tenure_mean_months: float = 18.0
    # The hard cases: each drawn from a stream of its own (see generator.hard_rng), so
    # that setting them to 0 gives back the book drawn before they existed.
    upgrade_uncollectible_rate: float = 0.5
    late_charge_event_rate: float = 0.15
    late_charge_event_hours_max: float = 12.0
    missing_charge_event_rate: float = 0.05
    old_invoice_rate: float = 0.02

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def class_weights(self) -> dict[str, float]:
        return {
            "soft": self.soft_share,
            "hard": self.hard_share,
            "fraud": self.fraud_share,
            "auth": self.auth_share,
        }


ASSUMPTION = "assumption"
WEBHOOKS = "docs.stripe.com/webhooks"

# key -> (what it is, where the default comes from)
MIX_DOCS: dict[str, tuple[str, str]] = {
    "renewal_failure_rate": (
        "share of renewal charges whose first, automatic attempt fails",
        f"{ASSUMPTION}, inside the 5-15 % range vendor reports usually quote",
    ),
    "upgrade_rate": ("share of accounts that upgrade mid-cycle, per 30-day cycle", ASSUMPTION),
    "upgrade_failure_rate": (
        "share of upgrade/proration charges that fail (unexpected mid-cycle amount, SCA)",
        f"{ASSUMPTION}; DESIGN.md gives only the legacy outcome (39 accounts a day)",
    ),
    "soft_share": (
        "failures with a soft decline (insufficient_funds, do_not_honor, generic_decline, "
        "processing_error, try_again_later)",
        ASSUMPTION,
    ),
    "hard_share": (
        "hard declines (expired_card, transaction_not_allowed, invalid_account, "
        "do_not_try_again, revocation_of_authorization)",
        ASSUMPTION,
    ),
    "fraud_share": (
        "fraud-type declines (fraudulent, stolen_card, lost_card, pickup_card, restricted_card)",
        ASSUMPTION,
    ),
    "auth_share": ("authentication_required (SCA on an off-session charge)", ASSUMPTION),
    "soft_clears": (
        "soft declines whose cause goes away (funds arrive): later charges succeed",
        ASSUMPTION,
    ),
    "soft_clear_days_mode": ("days until it clears: triangular(0.5, max, mode)", ASSUMPTION),
    "soft_clear_days_max": ("longest time until it clears, days", ASSUMPTION),
    "hard_updates_card": ("hard declines the customer fixes with a new card", ASSUMPTION),
    "hard_update_days_mode": ("days until the new card: triangular(0.5, max, mode)", ASSUMPTION),
    "hard_update_days_max": ("longest time until the new card, days", ASSUMPTION),
    "fraud_pays_on_session": (
        "fraud-declined customers who come back and pay on-session with another card "
        "(1-30 days, mode 5)",
        ASSUMPTION,
    ),
    "auth_completes": (
        "customers who authenticate on-session, paying what is open",
        ASSUMPTION,
    ),
    "auth_days_mode": ("days until they do: triangular(0.1, max, mode)", ASSUMPTION),
    "auth_days_max": ("longest time until they do, days", ASSUMPTION),
    "out_of_band_rate": (
        "failed invoices the customer pays out of band (bank transfer), 1-25 days later",
        ASSUMPTION,
    ),
    "void_rate": (
        "failed invoices finance voids (billing error, goodwill), 1-20 days later",
        ASSUMPTION,
    ),
    "uncollectible_rate": (
        "failed renewal invoices finance marks uncollectible, 25-45 days later",
        ASSUMPTION,
    ),
    "duplicate_rate": (
        "events delivered twice (the copy 5 s to 6 h later)",
        f'Stripe: endpoints "might occasionally receive the same event more than once" '
        f"({WEBHOOKS}); the rate is an {ASSUMPTION}",
    ),
    "delayed_rate": (
        "events delivered 1 min to 3 h late, so after later ones (the rest: 1-30 s)",
        f"Stripe does not guarantee delivery in the order events were generated "
        f"({WEBHOOKS}); the rate is an {ASSUMPTION}",
    ),
    "am_outage_hours": ("Account Management answers 503 for this long", ASSUMPTION),
    "am_outage_day": (
        "day the outage starts; -1: drawn in the middle third of the run",
        ASSUMPTION,
    ),
    "small_plan_share": ("accounts on the 5 USD plan", ASSUMPTION),
    "tenure_mean_months": (
        "mean months of paid history before the run, exponential (about 72 % have the 6 "
        "paid invoices that make a good payer)",
        ASSUMPTION,
    ),
    "upgrade_uncollectible_rate": (
        "hard case: failed upgrade invoices Stripe marks uncollectible when its own retries "
        "end (7-21 days, mode 14; the base plan stays paid unless its next renewal fails)",
        f"Stripe's subscription setting 'if all retries fail: mark the invoice as "
        f"uncollectible' (docs.stripe.com/billing/revenue-recovery/smart-retries); the rate "
        f"is an {ASSUMPTION}",
    ),
    "late_charge_event_rate": (
        "hard case: failed first attempts whose charge.failed and "
        "payment_intent.payment_failed (the events with the decline code) arrive 1 h to "
        "`late_charge_event_hours_max` after invoice.payment_failed; every decline class",
        f"Stripe does not guarantee delivery order ({WEBHOOKS}); the rate is an {ASSUMPTION}",
    ),
    "late_charge_event_hours_max": ("latest such delivery, hours", ASSUMPTION),
    "missing_charge_event_rate": (
        "hard case: failed first attempts whose charge events never arrive (the decline code "
        "is only to be had from the gateway)",
        f"Stripe stops retrying a delivery after 3 days ({WEBHOOKS}); the rate is an {ASSUMPTION}",
    ),
    "old_invoice_rate": (
        "hard case: accounts with an invoice that failed 20-60 days before the first event "
        "about it reaches the service (a go-live on an existing book), seen in its first week",
        ASSUMPTION,
    ),
}


def mix_table(mix: "Mix | None" = None) -> str:
    """The mix as a markdown table: key, value, meaning, source."""
    values = (mix or Mix()).as_dict()
    lines = ["| key | default | what it is | source |", "|---|---|---|---|"]
    for key, (meaning, source) in MIX_DOCS.items():
        lines.append(f"| `{key}` | {values[key]:g} | {meaning} | {source} |")
    return "\n".join(lines)


class MixError(ValueError):
    """A --mix option that does not name a key or does not hold a number."""


def parse_mix(pairs: list[str] | None, base: Mix | None = None) -> Mix:
    """`["renewal_failure_rate=0.2", ...]` over the defaults (or `base`)."""
    mix = base or Mix()
    known = {f.name for f in fields(Mix)}
    changes: dict[str, float] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise MixError(f"--mix {pair!r}: expected key=value with key one of {sorted(known)}")
        try:
            changes[key] = float(value)
        except ValueError as error:
            raise MixError(f"--mix {pair!r}: {value!r} is not a number") from error
    mix = replace(mix, **changes)
    for name, value in mix.as_dict().items():
        if name.endswith(
            ("_rate", "_share", "_clears", "_card", "_session", "_completes")
        ) and not (0.0 <= value <= 1.0):
            raise MixError(f"{name}={value}: a share must be between 0 and 1")
    if mix.late_charge_event_rate + mix.missing_charge_event_rate > 1.0:
        raise MixError("late_charge_event_rate + missing_charge_event_rate must not exceed 1")
    if mix.late_charge_event_hours_max < 1.0:
        raise MixError("late_charge_event_hours_max must be at least 1")
    if sum(mix.class_weights.values()) <= 0:
        raise MixError("the decline class shares must not all be 0")
    return mix
