"""The mix of customer behaviours the simulator draws a book from, with its defaults.

Every rate below is a default, overridable with `--mix key=value`. None of them is this
company's measured figure: where a public source gives the behaviour, it is named; every
number is otherwise an assumption chosen to be plausible for a card-billed SaaS business,
and is labelled as such. The report is about the *difference* between the legacy policy
and this service on the same stream, which holds across reasonable mixes (try some).

| key | default | what it is | source |
|---|---|---|---|
| `renewal_failure_rate` | 0.08 | share of renewal charges whose first (automatic) attempt fails | assumption, inside the 5-15 % range vendor reports usually quote |
| `upgrade_rate` | 0.05 | share of accounts that upgrade mid-cycle in a 30-day cycle | assumption |
| `upgrade_failure_rate` | 0.12 | share of upgrade/proration charges that fail (unexpected mid-cycle amount, SCA) | assumption; DESIGN.md only gives the legacy outcome (39 accounts/day in bad debt) |
| `soft_share` | 0.70 | failures with a soft decline (`insufficient_funds` first, then `do_not_honor`, `generic_decline`, `processing_error`, `try_again_later`) | assumption; classes from `decline_codes.csv` |
| `hard_share` | 0.17 | hard declines (`expired_card` first, `transaction_not_allowed`, `invalid_account`, `do_not_try_again`, `revocation_of_authorization`) | assumption |
| `fraud_share` | 0.05 | fraud-type declines (`fraudulent`, `stolen_card`, `lost_card`, `pickup_card`, `restricted_card`) | assumption |
| `auth_share` | 0.08 | `authentication_required` (SCA on an off-session charge) | assumption |
| `soft_clears` | 0.70 | soft declines whose cause goes away (funds arrive): any charge after that succeeds | assumption |
| `soft_clear_days_mode`, `soft_clear_days_max` | 2, 30 | days until it clears: triangular(0.5, max, mode) | assumption (most within a few days, paydays) |
| `hard_updates_card` | 0.55 | hard declines the customer fixes with a new card | assumption |
| `hard_update_days_mode`, `hard_update_days_max` | 3, 30 | days until the new card: triangular(0.5, max, mode) | assumption |
| `fraud_pays_on_session` | 0.15 | fraud-declined customers who come back and pay on-session with another card | assumption |
| `auth_completes` | 0.60 | customers who complete authentication on-session (paying what is open) | assumption |
| `auth_days_mode`, `auth_days_max` | 1, 14 | days until they do: triangular(0.1, max, mode) | assumption |
| `out_of_band_rate` | 0.03 | failed invoices the customer pays out of band (bank transfer), 1-25 days later | assumption |
| `void_rate` | 0.02 | failed invoices finance voids (billing error, goodwill), 1-20 days later | assumption |
| `uncollectible_rate` | 0.02 | failed renewal invoices finance marks uncollectible, 25-45 days later | assumption |
| `duplicate_rate` | 0.03 | events delivered twice | Stripe: endpoints "might occasionally receive the same event more than once" (docs.stripe.com/webhooks); the rate is an assumption |
| `delayed_rate` | 0.05 | events delivered 1 min-3 h late, so after later ones | Stripe does not guarantee delivery in the order events were generated (docs.stripe.com/webhooks); the rate is an assumption |
| `am_outage_hours` | 6 | Account Management answers 503 for this long | assumption |
| `am_outage_day` | -1 | day the outage starts; -1: drawn in the middle third of the run | assumption |
| `small_plan_share` | 0.05 | accounts on a 5.00 plan (at the ladder's small-amount cap) | assumption |
| `tenure_mean_months` | 18 | months of paid history before the run, exponential (about 72 % have 6 or more) | assumption |

Plans other than the small one: 9, 29, 49, 99 and 299 USD a month in the proportions 20/35/25/15/5
(assumption). Renewals are every 30 days from a day drawn uniformly in the first cycle.
The legacy policy's cadence is not part of the mix: it is the legacy system's (see `legacy`).
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
        if name.endswith(("_rate", "_share", "_clears", "_card", "_session", "_completes")) and not (
            0.0 <= value <= 1.0
        ):
            raise MixError(f"{name}={value}: a share must be between 0 and 1")
    if sum(mix.class_weights.values()) <= 0:
        raise MixError("the decline class shares must not all be 0")
    return mix
