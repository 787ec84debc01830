"""Adding an item to the outbox (kept apart from `outbox`, which runs them, so that code
deciding side effects does not import the code performing them)."""

import logging
from datetime import datetime

from celery import current_app

from dunning.models import OutboxItem

logger = logging.getLogger(__name__)


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
    item = OutboxItem.objects.create(
        account_id=account_id,
        decision_id=decision_id,
        kind=kind,
        key=key,
        payload=payload,
        next_attempt_at=due,
        created_at=now,
    )
    return item.pk


# Published by name: the task module runs the outbox, which this module must not import.
DISPATCH_TASK = "dunning.tasks.dispatch_outbox"


def kick_dispatcher() -> None:
    try:
        current_app.signature(DISPATCH_TASK).apply_async()
    except Exception:  # noqa: BLE001 - beat dispatches on its own schedule anyway
        logger.warning("event=outbox_kick_failed")
