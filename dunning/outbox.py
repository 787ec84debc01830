"""The outbox: side effects decided by the engine, run by workers after the commit.

    dispatch_due()   beat, every few seconds (and right after a commit that adds items):
                     claim due items with SELECT ... FOR UPDATE SKIP LOCKED, give each a
                     lease, commit, enqueue one task per item id.
    run_item(id)     a worker: check the item is still wanted, do the network call with
                     no lock held, then record the result in a short transaction and
                     hand the account back to the engine as a trigger.

A crashed worker's item, or one whose task message the broker lost (Redis killed), is
picked up again when its lease runs out, about a minute later, as the webhook pump does
for events; the other side sees the same idempotency key (the item's `key`). Every call
an effect makes is bounded by a client timeout well under the lease, so a live worker
finishes before anyone else may claim its item.
"""

import logging
import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction

from core import clock
from dunning.effects.registry import effect_for
from dunning.models import OutboxItem
from dunning.triggers import Trigger, TriggerKind

logger = logging.getLogger(__name__)

# Long enough for the slowest effect (a Stripe call times out after 10 s), short enough
# that a lost message costs about a minute, not a standing or a retry that comes late.
LEASE = timedelta(seconds=getattr(settings, "OUTBOX_LEASE_SECONDS", 60))
ORDER_WAIT = timedelta(seconds=2)
RETRY_BASE_SECONDS = 30
RETRY_CAP_SECONDS = 3600
# Published by name: the task module imports this one.
RUN_ITEM_TASK = "dunning.tasks.run_outbox_item"


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
    started = time.monotonic()
    handed = 0
    while True:
        ids = claim_due(limit=limit)
        for pk in ids:
            try:
                current_app.signature(RUN_ITEM_TASK, args=[pk]).apply_async()
            except Exception:  # noqa: BLE001 - the lease runs out and the next dispatch retries
                logger.warning("event=outbox_enqueue_failed outbox_item=%s", pk)
        handed += len(ids)
        if len(ids) < limit or time.monotonic() - started > budget_seconds:
            return handed


def run_item(*, item_id: int, finish_hand_back: bool = False) -> str:
    """Run one item. `finish_hand_back`: this is a retry of a task that may have died
    between closing the item and handing the account back (a database fault), so a closed
    item is handed back again; the engine is idempotent, a second hand-back changes nothing."""
    item = OutboxItem.objects.filter(pk=item_id).first()
    if item is None:
        return "skipped"
    if item.status != OutboxItem.Status.PENDING:
        if finish_hand_back:
            hand_back(item)
        return "skipped"
    effect = effect_for(item.kind)
    # Network I/O happens here, with no transaction open and no lock held.
    result = effect.perform(item) if effect.still_wanted(item) else None
    now = clock.now()
    with transaction.atomic():
        item = OutboxItem.objects.select_for_update().get(pk=item_id)
        if item.status != OutboxItem.Status.PENDING:
            return item.status
        item.claimed_until = None
        if result is not None and result.defer:
            item.next_attempt_at = result.defer_until or now + ORDER_WAIT
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
            effect.record(item, now)
        else:
            item.last_error = result.detail
            gives_up = not effect.KEEP_TRYING and item.attempts >= settings.OUTBOX_MAX_ATTEMPTS
            if not result.retryable or gives_up:
                item.status = OutboxItem.Status.DEAD
            else:
                item.next_attempt_at = now + retry_delay(item.attempts)
        item.save()
    if item.status != OutboxItem.Status.PENDING:
        hand_back(item)
    return item.status


def hand_back(item: OutboxItem) -> None:
    """A closed item's account goes back to the engine, which re-plans from the stores."""
    from dunning.engine import handle

    if not effect_for(item.kind).HANDS_BACK:
        return

    retry = item.kind == OutboxItem.Kind.PAYMENT_RETRY
    handle(
        Trigger(
            kind=TriggerKind.RETRY_RESULT if retry else TriggerKind.SIDE_EFFECT_COMPLETED,
            account_id=item.account_id,
            source=f"outbox:{item.kind}:{item.pk}",
            detail={"invoice": item.payload.get("stripe_invoice_id", "")},
        )
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
