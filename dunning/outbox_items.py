"""Adding an item to the outbox (kept apart from `outbox`, which runs them, so that code
deciding side effects does not import the code performing them)."""

from datetime import datetime

from dunning.models import OutboxItem


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
