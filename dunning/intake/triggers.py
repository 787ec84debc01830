"""Which trigger each Stripe event type dunning acts on hands the engine.

billing_events parses an event into facts (`billing_events.normalize.PARSERS`); what
those facts mean for a dunning case is decided here.
"""

from dunning.triggers import TriggerKind

TRIGGER_FOR_EVENT: dict[str, TriggerKind] = {
    "invoice.payment_failed": TriggerKind.PAYMENT_FAILED,
    "invoice.paid": TriggerKind.PAYMENT_SUCCEEDED,
    "invoice.payment_succeeded": TriggerKind.PAYMENT_SUCCEEDED,
    "invoice.marked_uncollectible": TriggerKind.MARKED_UNCOLLECTIBLE,
    "invoice.voided": TriggerKind.INVOICE_VOIDED,
    "invoice.finalized": TriggerKind.INVOICE_UPDATED,
    "invoice.updated": TriggerKind.INVOICE_UPDATED,
    "charge.failed": TriggerKind.PAYMENT_FAILED,
    "charge.succeeded": TriggerKind.PAYMENT_SUCCEEDED,
    "payment_intent.payment_failed": TriggerKind.PAYMENT_FAILED,
    "customer.subscription.created": TriggerKind.SUBSCRIPTION_CHANGED,
    "customer.subscription.updated": TriggerKind.SUBSCRIPTION_CHANGED,
    "customer.subscription.deleted": TriggerKind.SUBSCRIPTION_CHANGED,
    "customer.created": TriggerKind.PAYMENT_METHOD_UPDATED,
    "customer.updated": TriggerKind.PAYMENT_METHOD_UPDATED,
    "payment_method.attached": TriggerKind.PAYMENT_METHOD_UPDATED,
    "payment_method.updated": TriggerKind.PAYMENT_METHOD_UPDATED,
    "customer.source.expiring": TriggerKind.CARD_EXPIRING,
}
