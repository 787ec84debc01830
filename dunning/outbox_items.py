"""The outbox's items as a queue: adding one, and every change of a waiting item's status
made outside a worker's run (kept apart from `outbox`, which runs them, so that code
deciding side effects does not import the code performing them). With `outbox.run_item`
these are the only writers of an item's status."""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.db.models import Q

from dunning import queue
from dunning.models import OutboxItem

logger = logging.getLogger(__name__)

# Long enough for the slowest effect (a Stripe call times out after 10 s), short enough
# that a lost message costs about a minute, not a standing or a retry that comes late.
LEASE = timedelta(seconds=getattr(settings, "OUTBOX_LEASE_SECONDS", 60))
QUEUE = queue.Queue(
    model=OutboxItem,
    waiting=Q(status=OutboxItem.Status.PENDING),
    lease=LEASE,
    lease_field="claimed_until",
)


def add_item(
    *,
    account_id: int,
    decision_id: int | None,
    kind: str,
    key: str,
    payload: dict,
    due: datetime,
    now: datetime,
) -> int:
    """One side effect, due at `due`; its key is its idempotency key."""
    item = new_item(
        account_id=account_id,
        decision_id=decision_id,
        kind=kind,
        key=key,
        payload=payload,
        due=due,
        now=now,
    )
    item.save()
    return item.pk


def new_item(
    *,
    account_id: int,
    decision_id: int | None,
    kind: str,
    key: str,
    payload,
    due: datetime,
    now: datetime,
) -> OutboxItem:
    """The item `add_item` saves, unsaved: for a caller that writes it inside a larger
    statement (`payload` may then be an SQL expression naming a row written with it)."""
    return OutboxItem(
        account_id=account_id,
        decision_id=decision_id,
        kind=kind,
        key=key,
        payload=payload,
        next_attempt_at=due,
        created_at=now,
    )


# The payload key a payment retry's worker sets, under the account lock, when it begins
# the charge (how many times it has; the item's close removes it). A recompute leaves such
# a retry to its worker; any other pending retry is the plan's to replace.
CHARGING = "charging"

# Published by name: the task module runs the outbox, which this module must not import.
DISPATCH_TASK = "dunning.tasks.dispatch_outbox"


# A worker running a batch wakes the dispatcher once, when the batch is done: each
# recompute that adds an item asks for a kick, and a kick is a task on the same pool (and
# a claim), so one per recompute was one more task for every retry that paid.
_batch = threading.local()


def kick_dispatcher() -> None:
    if getattr(_batch, "depth", 0):
        _batch.kick = True
        return
    try:
        current_app.signature(DISPATCH_TASK).apply_async()
    except Exception:  # noqa: BLE001 - beat dispatches on its own schedule anyway
        logger.warning("event=outbox_kick_failed")


@contextmanager
def one_kick(dispatch: Callable[[], object] | None = None) -> Iterator[None]:
    """Kicks asked for inside the block are one kick at its end (if any was asked for):
    `dispatch()` when given (a worker hands the items out itself), else the message."""
    _batch.depth = getattr(_batch, "depth", 0) + 1
    try:
        yield
    finally:
        _batch.depth -= 1
        if not _batch.depth and getattr(_batch, "kick", False):
            _batch.kick = False
            (dispatch or kick_dispatcher)()


def supersede_waiting_retry(*, account_id: int, now: datetime) -> int:
    """A new plan replaces the account's retry that waits for its time, or that a worker
    holds but has not begun to charge (its check before the charge finds it superseded);
    one whose charge has begun (CHARGING, under a live lease) is left to its
    worker, which closes it."""
    return (
        OutboxItem.objects.filter(
            account_id=account_id,
            kind=OutboxItem.Kind.PAYMENT_RETRY,
            status=OutboxItem.Status.PENDING,
        )
        .exclude(claimed_until__gt=now, payload__has_key=CHARGING)
        .update(status=OutboxItem.Status.SUPERSEDED, completed_at=now, claimed_until=None)
    )


def redrive_side_effects(*, account_id: int, now: datetime) -> int:
    """The account's side effects that gave up, or wait out a long backoff, are due again
    now (a payment retry keeps its schedule: that is the retry policy, not a side effect)."""
    rows = (
        OutboxItem.objects.filter(
            account_id=account_id,
            status__in=[OutboxItem.Status.DEAD, OutboxItem.Status.PENDING],
        )
        .exclude(kind=OutboxItem.Kind.PAYMENT_RETRY)
        .exclude(claimed_until__gt=now)
    )
    return queue.redrive(QUEUE, rows, now=now, status=OutboxItem.Status.PENDING)
