"""Why the engine is asked to recompute an account.

A trigger only says *why*; the engine decides *what* from the stores, so a duplicated
or late trigger changes nothing.
"""

from dataclasses import dataclass, field
from enum import StrEnum


class TriggerKind(StrEnum):
    # The five names shared with the rest of the business: keep them exactly.
    PAYMENT_FAILED = "PAYMENT_FAILED"
    MARKED_UNCOLLECTIBLE = "MARKED_UNCOLLECTIBLE"
    BAD_DEBT_PAID = "BAD_DEBT_PAID"
    DRIFT_DETECTED = "DRIFT_DETECTED"
    NINJAPANEL_BUTTON = "NINJAPANEL_BUTTON"
    # The others the flow needs.
    PAYMENT_SUCCEEDED = "PAYMENT_SUCCEEDED"
    INVOICE_VOIDED = "INVOICE_VOIDED"
    INVOICE_UPDATED = "INVOICE_UPDATED"
    SUBSCRIPTION_CHANGED = "SUBSCRIPTION_CHANGED"
    PAYMENT_METHOD_UPDATED = "PAYMENT_METHOD_UPDATED"
    CARD_EXPIRING = "CARD_EXPIRING"
    RETRY_RESULT = "RETRY_RESULT"
    SIDE_EFFECT_COMPLETED = "SIDE_EFFECT_COMPLETED"
    TIME_PASSED = "TIME_PASSED"


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind
    account_id: int
    # Who or what caused it: a Stripe event id, a support user, a beat task.
    source: str = ""
    detail: dict = field(default_factory=dict)
