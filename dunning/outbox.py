"""The outbox: side effects decided by the engine, run by workers after the commit.

    dispatch_due()   beat, every few seconds (and right after a commit that adds items):
                     claim due items (`dunning.queue`: SKIP LOCKED, a lease each), commit,
                     publish their ids in batches, one task message per batch.
    run_item(id)     a worker: check the item is still wanted, do the network call with
                     no lock held, then, in one transaction, record the result and hand
                     the account back to the engine as a trigger (it recomputes).

A crashed worker's item, or one whose task message the broker lost (Redis killed), is
picked up again when its lease runs out, about a minute later, as the webhook pump does
for events; the other side sees the same idempotency key (the item's `key`). Every call
an effect makes is bounded by a client timeout well under the lease, so a live worker
finishes before anyone else may claim its item.
"""

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction

from billing_events.models import Account
from core import clock
from core.locks import account_lock_clause
from core.row_sql import RowUpdate
from dunning import outbox_items, queue
from dunning.effects.registry import effect_for
from dunning.engine import handle, recompute_within
from dunning.models import OutboxItem
from dunning.outbox_begin import begin
from dunning.outbox_items import CHARGING, QUEUE
from dunning.triggers import Trigger

logger = logging.getLogger(__name__)

ORDER_WAIT = timedelta(seconds=2)
RETRY_CAP = timedelta(hours=1)
# Item ids per task message: a worker runs a batch in order, so a batch is short enough
# that its last item does not wait long behind the others (a retry is a Stripe call).
BATCH = 10
# Published by name: the task module imports this one.
RUN_ITEM_TASK = "dunning.tasks.run_outbox_item"
RUN_ITEMS_TASK = "dunning.tasks.run_outbox_items"


def retry_delay(attempts: int) -> timedelta:
    return queue.backoff(attempts, cap=RETRY_CAP)


def claim_due(*, limit: int = 500) -> list[int]:
    return queue.claim(QUEUE, now=clock.now(), limit=limit)


def dispatch_due(*, limit: int = 500, budget_seconds: float = 2.0) -> int:
    """Hand due items to workers until none is due or the time budget of one beat tick is
    spent (so a backlog drains in one tick, not `limit` items per tick)."""
    started = time.monotonic()
    handed = 0
    while True:
        ids = claim_due(limit=limit)
        handed += queue.dispatch(QUEUE, ids, publish=_publish, batch=BATCH, now=clock.now)
        if len(ids) < limit or time.monotonic() - started > budget_seconds:
            return handed


def _publish(ids: list[int]) -> bool:
    current_app.signature(RUN_ITEMS_TASK, args=[ids]).apply_async()
    return True


def run_items(item_ids: list[int], *, dispatch: Callable[[], object] | None = None) -> list[str]:
    """A worker's batch, one item after the other. A database fault hands that item to
    `run_outbox_item`, whose retries back off; any other failure leaves the item to its
    lease (logged), and the batch goes on. The dispatcher runs once, after the batch, for
    whatever the batch's recomputes added (not once per recompute): `dispatch()` in this
    process when given (a failure only logged), else a task message wakes it."""
    statuses = []
    with outbox_items.one_kick(dispatch=_failure_logged(dispatch) if dispatch else None):
        for item_id in item_ids:
            try:
                item = begin(item_id, now=clock.now())
                if item is None:
                    statuses.append("skipped")  # its lease ran out while it waited: due again
                    continue
                statuses.append(_run(item))
            except DatabaseError:
                logger.warning("event=outbox_item_database_error outbox_item=%s", item_id)
                close_old_connections()
                current_app.signature(RUN_ITEM_TASK, args=[item_id]).apply_async()
                statuses.append("retrying")
            except Exception:
                logger.exception("event=outbox_item_failed outbox_item=%s", item_id)
                statuses.append("failed")
    return statuses


def _failure_logged(dispatch: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            dispatch()
        except Exception:  # the batch's own work is done and committed; beat dispatches
            logger.warning("event=outbox_dispatch_after_batch_failed", exc_info=True)

    return run


def run_item(*, item_id: int, finish_hand_back: bool = False) -> str:
    """Run one item, whoever holds its lease (tests, the demo, a batch's item retried after
    a database fault). `finish_hand_back`: this is a retry of a task that may have died
    between closing the item and handing the account back (a database fault), so a closed
    item is handed back again; the engine is idempotent, a second hand-back changes nothing."""
    item = begin(item_id, now=clock.now(), own_lease=False)
    if item is not None:
        return _run(item)
    if finish_hand_back:
        closed = OutboxItem.objects.filter(pk=item_id).first()
        if closed is not None:
            hand_back(closed)
    return "skipped"


def _run(item: OutboxItem) -> str:
    """A pending item: check it is still wanted, do the network call with no transaction
    open and no lock held, then close it, record the result and hand the account back in
    one transaction."""
    effect = effect_for(item.kind)
    result = effect.perform(item) if effect.still_wanted(item) else None
    now = clock.now()
    fields = _close(item, effect, result, now)
    try:
        with transaction.atomic():
            return _close_and_record(item, effect, result, fields, now, hand_back=True)
    except _HandBackFailed:
        # The recompute broke (not the database): the close is made again without it, so
        # a broken recompute cannot make the side effect run again and again; the
        # account's next trigger recomputes it.
        with transaction.atomic():
            return _close_and_record(item, effect, result, fields, now, hand_back=False)


class _HandBackFailed(Exception):
    """Rolls back a recompute that failed halfway, with the close it shared a transaction
    with (no savepoint between them: one round trip less each way on every item)."""


# Closed only if still pending: a recompute may have superseded a retry whose charge had
# not begun.
CLOSE = RowUpdate(
    "dunning_outbox_close",
    OutboxItem,
    where="id = %(item)s AND status = %(pending)s",
    where_types={"item": "bigint", "pending": "text"},
)
# For an item that hands its account back, the engine's lock order, account then item, in
# the closing statement itself: the subquery locks the account before the UPDATE takes the
# item's lock. The recompute runs in this transaction, and a webhook's recompute may be
# rescheduling this very item.
CLOSE_LOCKED = RowUpdate(
    "dunning_outbox_close_locked",
    OutboxItem,
    where=f"""id = %(item)s AND status = %(pending)s AND account_id IN (
      SELECT a.id FROM {connection.ops.quote_name(Account._meta.db_table)} a
      WHERE a.id = %(account)s{account_lock_clause("a")})""",
    where_types={"item": "bigint", "pending": "text", "account": "bigint"},
)


def _close_and_record(item: OutboxItem, effect, result, fields: dict, now, *, hand_back: bool):
    pending = {"item": item.pk, "pending": OutboxItem.Status.PENDING}
    if effect.HANDS_BACK:
        closed = CLOSE_LOCKED.send(fields, **pending, account=item.account_id)
    else:
        closed = CLOSE.send(fields, **pending)
    if not closed:
        return OutboxItem.objects.filter(pk=item.pk).values_list("status", flat=True)[0]
    for name, value in fields.items():
        setattr(item, name, value)
    if result is not None and result.ok and not result.defer:
        effect.record(item, now)
    if hand_back and item.status != OutboxItem.Status.PENDING and effect.HANDS_BACK:
        # Recorded and recomputed in one transaction: no moment where the result is in
        # the mirror and the case does not know it.
        try:
            recompute_within(_hand_back_trigger(item, effect))
        except DatabaseError:
            raise  # the task retries; the effect runs again under its idempotency key
        except Exception as error:
            logger.exception("event=outbox_hand_back_failed outbox_item=%s", item.pk)
            raise _HandBackFailed from error
    return item.status


def _close(item: OutboxItem, effect, result, now) -> dict:
    """The item's new fields from what the effect came to (the one writer of its status).
    A retry's charge mark (`outbox_items.CHARGING`) goes with the lease."""
    payload = {k: v for k, v in item.payload.items() if k != CHARGING}
    fields = {"claimed_until": None, "payload": payload}
    if result is not None and result.defer:
        fields["next_attempt_at"] = result.defer_until or now + ORDER_WAIT
        return fields
    attempts = fields["attempts"] = item.attempts + 1
    if result is None:
        fields.update(status=OutboxItem.Status.SUPERSEDED, completed_at=now)
    elif result.ok:
        fields.update(
            status=OutboxItem.Status.DONE,
            completed_at=now,
            result={"detail": result.detail, **result.data},
        )
    else:
        fields["last_error"] = result.detail
        gives_up = not effect.KEEP_TRYING and attempts >= settings.OUTBOX_MAX_ATTEMPTS
        if not result.retryable or gives_up:
            fields["status"] = OutboxItem.Status.DEAD
        else:
            fields["next_attempt_at"] = now + retry_delay(attempts)
    return fields


def hand_back(item: OutboxItem) -> None:
    """A closed item's account goes back to the engine, which re-plans from the stores."""
    effect = effect_for(item.kind)
    if effect.HANDS_BACK:
        handle(_hand_back_trigger(item, effect))


def _hand_back_trigger(item: OutboxItem, effect) -> Trigger:
    return Trigger(
        kind=effect.HAND_BACK_TRIGGER,
        account_id=item.account_id,
        source=f"outbox:{item.kind}:{item.pk}",
        detail={"invoice": item.payload.get("stripe_invoice_id", "")},
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
