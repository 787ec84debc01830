"""The five stores an account's dunning depends on, as plain data.

`dunning.snapshot_pg.lock_and_read` fills these in a constant number of statements,
whatever the account's history: only invoices that are in dunning, belong to the case, or
were named by the trigger are loaded.
"""

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

DEFAULT_STANDING = "good"


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class InvoiceView:
    pk: int
    stripe_invoice_id: str
    status: str
    amount_remaining: int
    currency: str
    billing_reason: str
    attempt_count: int
    payment_failed_at: datetime | None  # Stripe's invoice.payment_failed, newest seen
    paid_out_of_band: bool
    opened_at: datetime
    subscription_id: str
    case_id: int | None
    updated_at: datetime | None = None  # Stripe's time of the newest event about it

    @property
    def payment_failed(self) -> bool:
        return self.payment_failed_at is not None


@dataclass(frozen=True)
class AttemptView:
    invoice_pk: int
    outcome: str
    decline_code: str
    advice_code: str
    network_advice_code: str
    network_decline_code: str
    payment_method: str
    attempted_at: datetime
    card_brand: str = ""
    customer_initiated: bool = False
    pk: int = 0  # the attempt's own identity: two declines alike in every field are two


# A case field the engine decides: `engine.diff` compares it, `apply` writes it.
DECIDED = {"decided": True}


@dataclass(frozen=True, kw_only=True)
class CaseView:
    """The case as the engine reads it, and the one declaration of its fields: the snapshot
    selects exactly these columns (`snapshot_sql.CASE_COLUMNS`), and the engine diffs and
    writes the ones marked decided (`DECIDED_CASE_FIELDS`); the others are support's holds
    and the case's identity."""

    pk: int
    state: str = field(metadata=DECIDED)
    resolution: str = field(metadata=DECIDED)
    level: str = field(metadata=DECIDED)
    # When the current level took effect.
    level_since: datetime | None = field(default=None, metadata=DECIDED)
    decline_class: str = field(metadata=DECIDED)
    earliest_unpaid_at: datetime | None = field(metadata=DECIDED)
    amount_overdue: dict[str, int] = field(metadata=DECIDED)
    next_review_at: datetime | None = field(metadata=DECIDED)
    next_retry_at: datetime | None = field(metadata=DECIDED)
    paused_until: datetime | None = None
    pause_reason: str = ""
    grace_until: datetime | None = None
    grace_reason: str = ""
    opened_at: datetime | None = None
    shadow: dict = field(default_factory=dict, metadata=DECIDED)
    policy_version: str = ""  # the label of the policy version the case runs on


CASE_FIELDS = tuple(f.name for f in fields(CaseView))
DECIDED_CASE_FIELDS = tuple(f.name for f in fields(CaseView) if f.metadata.get("decided"))


@dataclass(frozen=True)
class ScheduledRetry:
    """The pending payment retry of the account (there is at most one)."""

    outbox_pk: int
    stripe_invoice_id: str
    attempt_number: int
    at: datetime
    running: bool  # a worker holds it right now


@dataclass(frozen=True)
class NoticeView:
    """A customer notice already planned for the account (see dunning.notifications)."""

    key: str
    kind: str
    status: str
    due_at: datetime
    claimed_at: datetime | None = None


@dataclass(frozen=True)
class Snapshot:
    account_id: int
    invoices: tuple[InvoiceView, ...]
    attempts: tuple[AttemptView, ...]
    subscription_status: dict[str, str]
    case: CaseView | None  # the open case, else a resolved one the trigger's invoice belongs to
    restrictions: dict[str, str]  # code -> level that imposed it
    standing_requested: str
    standing_acknowledged: str
    side_effects_in_flight: int
    payment_method_updated_at: datetime | None
    scheduled_retry: ScheduledRetry | None = None
    # Every attempt of the account within the longest network window, any invoice.
    card_history: tuple[AttemptView, ...] = ()
    default_payment_method: str = ""
    paid_invoices: int = 0
    recent_cases: int = 0  # earlier cases opened within the severity memory
    bad_debt: str | None = None  # reason of the open bad-debt episode
    cancel_requested: frozenset[str] = frozenset()  # subscriptions with a pending cancel
    # Side effects that ended without success: facts, never re-requested without a new reason.
    cancel_refused: dict[str, str] = field(default_factory=dict)  # subscription -> error
    revert_refused: dict[str, str] = field(default_factory=dict)  # subscription -> error
    reverted_invoices: frozenset[str] = frozenset()  # upgrade invoices dunning reverted
    revert_requested: frozenset[str] = frozenset()  # subscriptions with a pending revert
    reverts_done: frozenset[str] = frozenset()  # subscriptions whose upgrade was reverted
    # Decline look-ups asked of Stripe, by "invoice:attempt" key: when each was asked, and
    # which have ended (answered, or given up on).
    lookups_asked: dict[str, datetime] = field(default_factory=dict)
    lookups_ended: frozenset[str] = frozenset()
    # The subscription items before an upgrade, by subscription (from the mirror).
    items_before_upgrade: dict[str, tuple] = field(default_factory=dict)
    # Customer notices of the case and recent ones of the account, by key.
    notices: dict[str, NoticeView] = field(default_factory=dict)
    card_expiring_at: datetime | None = None  # the first moment the card stops working
    # Inside the rollout gate: consequences are applied; outside: shadow mode.
    enforced: bool = True
    rollout_stage: str = "100"
    # The number of the active stored policy version; None: none stored, the code default.
    policy_active: int | None = None
    policy_candidate: int | None = None  # a version computed in shadow next to it
