"""The outbox: side effects decided by the engine, run by workers after the commit.

    dispatch_due()   beat, every few seconds (and right after a commit that adds items):
                     claim due items with SELECT ... FOR UPDATE SKIP LOCKED, give each a
                     lease, commit, enqueue one task per item id.
    run_item(id)     a worker: check the item is still wanted, do the network call with
                     no lock held, then record the result in a short transaction and
                     hand the account back to the engine as a trigger.

A crashed worker's item is picked up again when its lease runs out; the other side
sees the same idempotency key (the item's `key`).
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction

from billing_events import services as billing
from dunning import clock, outcomes
from dunning.account_management import EffectResult, send_standing
from dunning.models import AccountStanding, OutboxItem
from dunning.triggers import Trigger, TriggerKind

logger = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)
ORDER_WAIT = timedelta(seconds=2)
# Notifications that must converge however long the other side is down: they retry at the
# capped interval until it answers (the backlog is visible in the admin and in metrics).
KEEP_TRYING = {OutboxItem.Kind.ACCOUNT_STANDING, OutboxItem.Kind.OUTCOME_EVENT}
RETRY_BASE_SECONDS = 30
RETRY_CAP_SECONDS = 3600


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0), RETRY_CAP_SECONDS))


def claim_due(*, limit: int = 500) -> list[int]:
    now = clock.now()
    with transaction.atomic():
        ids = list(
            OutboxItem.objects.select_for_update(skip_locked=True)
            .filter(status=OutboxItem.Status.PENDING, next_attempt_at__lte=now)
            .exclude(claimed_until__gt=now)
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        OutboxItem.objects.filter(pk__in=ids).update(claimed_until=now + LEASE)
    return ids


def dispatch_due(*, limit: int = 500, budget_seconds: float = 2.0) -> int:
    """Hand due items to workers in batches until none is due or the time budget of one
    beat tick is spent (so a backlog drains in one tick, not 500 items per tick)."""
    from dunning.tasks import run_outbox_item

    started = time.monotonic()
    handed = 0
    while True:
        ids = claim_due(limit=limit)
        for pk in ids:
            try:
                run_outbox_item.apply_async(args=[pk])
            except Exception:  # noqa: BLE001 - the lease runs out and the next dispatch retries
                logger.warning("event=outbox_enqueue_failed outbox_item=%s", pk)
        handed += len(ids)
        if len(ids) < limit or time.monotonic() - started > budget_seconds:
            return handed


def kick_dispatcher() -> None:
    from dunning.tasks import dispatch_outbox

    try:
        dispatch_outbox.apply_async()
    except Exception:  # noqa: BLE001 - beat dispatches on its own schedule anyway
        logger.warning("event=outbox_kick_failed")


def _still_wanted(item: OutboxItem) -> bool:
    if item.kind == OutboxItem.Kind.CANCEL_SUBSCRIPTION:
        return not billing.subscription_cancelled(subscription_id=item.payload["subscription_id"])
    if item.kind == OutboxItem.Kind.PAYMENT_RETRY:
        return billing.open_invoice(stripe_invoice_id=item.payload["stripe_invoice_id"]) is not None
    if item.kind == OutboxItem.Kind.ACCOUNT_STANDING:
        requested = (
            AccountStanding.objects.filter(account_id=item.account_id)
            .values_list("requested", flat=True)
            .first()
        )
        return requested == item.payload["standing"]
    return True


def _pay(item: OutboxItem) -> EffectResult:
    result = billing.gateway().pay_invoice(
        invoice_id=item.payload["stripe_invoice_id"], idempotency_key=item.key
    )
    if result.outcome == "error" and result.retryable_error:
        # Unknown or transient: the same key again later, so Stripe never charges twice.
        return EffectResult(ok=False, retryable=True, detail=result.message or "transient error")
    if result.outcome == "error":
        return EffectResult(ok=False, retryable=False, detail=result.message or "refused")
    detail = result.outcome + (f" ({result.decline_code})" if result.decline_code else "")
    return EffectResult(ok=True, detail=detail, data=billing.result_as_dict(result))


def _cancel(item: OutboxItem) -> EffectResult:
    result = billing.gateway().cancel_subscription(
        subscription_id=item.payload["subscription_id"], idempotency_key=item.key
    )
    if result.ok:
        return EffectResult(ok=True, detail=f"subscription {result.status or 'canceled'}")
    return EffectResult(ok=False, retryable=result.retryable_error, detail=result.message)


def _perform(item: OutboxItem) -> EffectResult:
    if item.kind == OutboxItem.Kind.PAYMENT_RETRY:
        return _pay(item)
    if item.kind == OutboxItem.Kind.CANCEL_SUBSCRIPTION:
        return _cancel(item)
    if item.kind == OutboxItem.Kind.OUTCOME_EVENT:
        if outcomes.earlier_undelivered(item):
            return EffectResult(ok=False, defer=True, detail="waiting for an earlier event")
        return outcomes.deliver(item, clock.now())
    if item.kind == OutboxItem.Kind.ACCOUNT_STANDING:
        return send_standing(
            stripe_customer_id=item.payload["stripe_customer_id"],
            standing=item.payload["standing"],
            idempotency_key=item.key,
        )
    return EffectResult(ok=False, retryable=False, detail=f"no executor for {item.kind}")


def run_item(*, item_id: int) -> str:
    item = OutboxItem.objects.filter(pk=item_id, status=OutboxItem.Status.PENDING).first()
    if item is None:
        return "skipped"
    # Network I/O happens here, with no transaction open and no lock held.
    result = _perform(item) if _still_wanted(item) else None
    now = clock.now()
    with transaction.atomic():
        item = OutboxItem.objects.select_for_update().get(pk=item_id)
        if item.status != OutboxItem.Status.PENDING:
            return item.status
        item.claimed_until = None
        if result is not None and result.defer:
            item.next_attempt_at = now + ORDER_WAIT
            item.save()
            return item.status
        item.attempts += 1
        if result is None:
            item.status = OutboxItem.Status.SUPERSEDED
            item.completed_at = now
        elif result.ok:
            item.status = OutboxItem.Status.DONE
            item.completed_at = now
            item.result = {"detail": result.detail, **result.data}
            _record_success(item, now)
        else:
            item.last_error = result.detail
            gives_up = (
                item.kind not in KEEP_TRYING and item.attempts >= settings.OUTBOX_MAX_ATTEMPTS
            )
            if not result.retryable or gives_up:
                item.status = OutboxItem.Status.DEAD
            else:
                item.next_attempt_at = now + retry_delay(item.attempts)
        item.save()
    if item.status != OutboxItem.Status.PENDING:
        from dunning.engine import handle

        retry = item.kind == OutboxItem.Kind.PAYMENT_RETRY
        handle(
            Trigger(
                kind=TriggerKind.RETRY_RESULT if retry else TriggerKind.SIDE_EFFECT_COMPLETED,
                account_id=item.account_id,
                source=f"outbox:{item.kind}:{item.pk}",
                detail={"invoice": item.payload.get("stripe_invoice_id", "")},
            )
        )
    return item.status


def _record_success(item: OutboxItem, now) -> None:
    if item.kind == OutboxItem.Kind.PAYMENT_RETRY:
        billing.record_retry_result(
            account_id=item.account_id,
            stripe_invoice_id=item.payload["stripe_invoice_id"],
            attempt_key=f"attempt:{item.key}",
            result=item.result,
            at=now,
        )
    if item.kind == OutboxItem.Kind.CANCEL_SUBSCRIPTION:
        billing.record_subscription_cancelled(
            account_id=item.account_id, subscription_id=item.payload["subscription_id"], at=now
        )
    if item.kind == OutboxItem.Kind.ACCOUNT_STANDING:
        AccountStanding.objects.filter(account_id=item.account_id).update(
            acknowledged=item.payload["standing"], acknowledged_at=now
        )


def drain(*, max_rounds: int = 20) -> int:
    """Run every due item in this process until none is left (tests, demo, test clock)."""
    ran = 0
    for _ in range(max_rounds):
        ids = claim_due()
        if not ids:
            break
        for pk in ids:
            run_item(item_id=pk)
            ran += 1
    return ran
