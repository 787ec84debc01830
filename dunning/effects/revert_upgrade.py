"""The end of an unpaid upgrade: the subscription back to its items before the upgrade
(no proration), then the unpaid upgrade invoices voided. The customer keeps the base plan."""

from datetime import datetime

from billing_events import services as billing
from dunning.effects.result import EffectResult
from dunning.models import OutboxItem
from dunning.triggers import TriggerKind

KEEP_TRYING = False
HANDS_BACK = True
HAND_BACK_TRIGGER = TriggerKind.SIDE_EFFECT_COMPLETED


def still_wanted(item: OutboxItem) -> bool:
    return any(
        billing.unsettled_invoice(stripe_invoice_id=invoice_id) is not None
        for invoice_id in item.payload["invoices"]
    )


def perform(item: OutboxItem) -> EffectResult:
    items = item.payload["items"]
    if not items:
        return EffectResult(
            ok=False, detail="the subscription's items before the upgrade are not known"
        )
    gateway = billing.gateway()
    subscription_id = item.payload["subscription_id"]
    reverted = gateway.revert_subscription(
        subscription_id=subscription_id, items=items, idempotency_key=f"{item.key}:items"
    )
    if not reverted.ok:
        return EffectResult(ok=False, retryable=reverted.retryable_error, detail=reverted.message)
    voided = []
    for invoice_id in item.payload["invoices"]:
        result = gateway.void_invoice(
            invoice_id=invoice_id, idempotency_key=f"{item.key}:void:{invoice_id}"
        )
        if not result.ok and result.status != "paid":
            return EffectResult(ok=False, retryable=result.retryable_error, detail=result.message)
        if result.ok:
            voided.append(invoice_id)
    return EffectResult(ok=True, detail="upgrade reverted", data={"voided": voided})


def record(item: OutboxItem, now: datetime) -> None:
    billing.record_upgrade_reverted(
        subscription_id=item.payload["subscription_id"],
        items=item.payload["items"],
        voided_invoice_ids=item.result.get("voided", []),
        at=now,
    )


def fold_pending(row: dict, payload: dict, running: bool, snapshot: dict) -> int:
    snapshot["revert_requested"].add(payload["subscription_id"])
    return 1


def fold_ended(row: dict, payload: dict, snapshot: dict) -> None:
    if row["status"] == "dead":
        snapshot["revert_refused"][payload["subscription_id"]] = row["last_error"][:200]
    else:
        snapshot["reverts_done"].add(payload["subscription_id"])
        snapshot["reverted_invoices"].update(payload["invoices"])
