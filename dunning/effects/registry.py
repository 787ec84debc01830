"""Which module performs which kind of outbox item."""

from types import ModuleType

from dunning.effects import (
    cancel_subscription,
    customer_notice,
    failure_lookup,
    outcome_event,
    payment_retry,
    revert_upgrade,
    standing,
)
from dunning.models import OutboxItem

REGISTRY: dict[str, ModuleType] = {
    OutboxItem.Kind.PAYMENT_RETRY: payment_retry,
    OutboxItem.Kind.CANCEL_SUBSCRIPTION: cancel_subscription,
    OutboxItem.Kind.REVERT_UPGRADE: revert_upgrade,
    OutboxItem.Kind.ACCOUNT_STANDING: standing,
    OutboxItem.Kind.OUTCOME_EVENT: outcome_event,
    OutboxItem.Kind.FAILURE_LOOKUP: failure_lookup,
    OutboxItem.Kind.CUSTOMER_NOTICE: customer_notice,
}


def effect_for(kind: str) -> ModuleType:
    return REGISTRY[kind]
