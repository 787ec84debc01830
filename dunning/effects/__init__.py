"""Side effects the engine asks for: one module per kind, found through one registry.

Every kind has the same small interface, and the outbox (`dunning.outbox`) is the only
code that runs it or writes an item's status:

    still_wanted(item) -> bool         checked right before the network call
    perform(item) -> EffectResult      the network call, with no lock held
    record(item, now) -> None          what success means for the stores, in the
                                       transaction that closes the item
    KEEP_TRYING: bool                  retry at the capped interval until the peer answers
    HANDS_BACK: bool                   a closed item sends its account back to the engine
"""

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
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem

__all__ = ["EffectResult", "effect_for"]

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
