"""The five stores an account's dunning depends on, as plain data.

`dunning.snapshot_sql.lock_and_read` fills these in a constant number of statements,
whatever the account's history: only invoices that are in dunning, belong to the case, or
were named by the trigger are loaded.
"""

from dataclasses import dataclass, field
from datetime import datetime

DEFAULT_STANDING = "good"


@dataclass(frozen=True)
class InvoiceView:
    pk: int
    stripe_invoice_id: str
    status: str
    amount_remaining: int
    currency: str
    billing_reason: str
    attempt_count: int
    payment_failed: bool
    paid_out_of_band: bool
    opened_at: datetime
    subscription_id: str
    case_id: int | None


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


@dataclass(frozen=True)
class CaseView:
    pk: int
    state: str
    resolution: str
    level: str
    decline_class: str
    earliest_unpaid_at: datetime | None
    amount_overdue: dict[str, int]
    next_review_at: datetime | None
    next_retry_at: datetime | None
    paused_until: datetime | None = None
    pause_reason: str = ""
    grace_until: datetime | None = None
    grace_reason: str = ""
    opened_at: datetime | None = None
    shadow: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduledRetry:
    """The pending payment retry of the account (there is at most one)."""

    outbox_pk: int
    stripe_invoice_id: str
    attempt_number: int
    at: datetime
    running: bool  # a worker holds it right now


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
    # Attempts per card (payment method) within the network's window.
    card_attempts: dict[str, int] = field(default_factory=dict)
    paid_invoices: int = 0
    recent_cases: int = 0  # earlier cases opened within the severity memory
    bad_debt: str | None = None  # reason of the open bad-debt episode
    cancel_requested: frozenset[str] = frozenset()  # subscriptions with a pending cancel
    # Inside the rollout gate: consequences are applied; outside: shadow mode.
    enforced: bool = True
    rollout_stage: str = "100"
