"""A worker begins an item: its lease renewed while still its own, and, for a payment
retry, the mark that its charge begins, under the account lock, in one statement.

The batch's claim leased every item for one LEASE; the items before this one may have
used it up. Renewed only while still ours: once it ran out, a dispatcher may have handed
the item out again, and two workers must never run it at once.

A retry's mark (`outbox_items.CHARGING`, how many charges of it have begun) is what makes
a later recompute leave the retry to this worker (`supersede_waiting_retry`); the row
comes back with `review_due`, whether the case has a review due and not yet made (then
time alone may have changed the plan, and the retry's last check computes it afresh).
"""

from datetime import datetime

from django.db import connection, transaction

from billing_events.models import Account
from core.model_rows import ModelRows
from core.prepared import PreparedStatement
from dunning.models import OPEN_STATES, DunningCase, OutboxItem
from dunning.outbox_items import CHARGING, LEASE

RETRY = OutboxItem.Kind.PAYMENT_RETRY
PENDING = OutboxItem.Status.PENDING


def begin(item_id: int, *, now: datetime, own_lease: bool = True) -> OutboxItem | None:
    """The item begun, with `review_due` set on it, or None when it is no longer pending
    (or, with `own_lease`, no longer ours: its lease ran out)."""
    if connection.vendor != "postgresql":
        return _begin_orm(item_id, now=now, own_lease=own_lease)
    params = {
        "item": item_id,
        "retry": RETRY,
        "pending": PENDING,
        "lease": now + LEASE,
        "now": now,
        "own_lease": own_lease,
        "open": list(OPEN_STATES),
    }
    with connection.cursor() as cursor:
        cursor.execute(BEGIN.sql_to_send(), params)
        row = cursor.fetchone()
    return None if row is None else _item(row)


def _item(row: tuple) -> OutboxItem:
    *values, review_due = row
    item = ITEM_ROWS.build(values)
    item.review_due = review_due
    return item


def _t(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


ITEM_ROWS = ModelRows(OutboxItem)


# A retry's account is locked first (the engine's lock order, account then item): the
# EXISTS over the locking CTE is evaluated before the UPDATE takes the item's row lock.
BEGIN_SQL = f"""
WITH item AS (
  SELECT id, account_id, kind = %(retry)s AS charges FROM {_t(OutboxItem)} WHERE id = %(item)s
), account AS MATERIALIZED (
  SELECT a.id FROM {_t(Account)} a JOIN item ON a.id = item.account_id
  WHERE item.charges FOR UPDATE OF a
)
UPDATE {_t(OutboxItem)} o
SET claimed_until = %(lease)s,
    payload = CASE WHEN item.charges THEN o.payload || jsonb_build_object(
        '{CHARGING}', COALESCE((o.payload ->> '{CHARGING}')::int, 0) + 1) ELSE o.payload END
FROM item
WHERE o.id = item.id AND o.status = %(pending)s
  AND (NOT %(own_lease)s OR o.claimed_until > %(now)s)
  AND (NOT item.charges OR EXISTS (SELECT 1 FROM account))
RETURNING {ITEM_ROWS.columns("o")}, item.charges AND EXISTS (
  SELECT 1 FROM {_t(DunningCase)} c
  WHERE c.account_id = o.account_id AND c.state = ANY(%(open)s) AND c.next_review_at <= %(now)s
) AS review_due
"""
BEGIN = PreparedStatement(
    "dunning_outbox_begin",
    BEGIN_SQL,
    {
        "item": "bigint",
        "retry": "text",
        "pending": "text",
        "lease": "timestamptz",
        "now": "timestamptz",
        "own_lease": "boolean",
        "open": "text[]",
    },
)


def _begin_orm(item_id: int, *, now: datetime, own_lease: bool) -> OutboxItem | None:
    """The same on SQLite (the embedded demo), in a few statements."""
    with transaction.atomic():
        ours = OutboxItem.objects.filter(pk=item_id, status=PENDING)
        if own_lease:
            ours = ours.filter(claimed_until__gt=now)
        item = ours.first()
        if item is None:
            return None
        item.claimed_until = now + LEASE
        item.review_due = False
        if item.kind != RETRY:
            ours.update(claimed_until=item.claimed_until)
            return item
        list(Account.objects.select_for_update().filter(pk=item.account_id).values("pk"))
        item.payload = {**item.payload, CHARGING: int(item.payload.get(CHARGING, 0)) + 1}
        ours.update(claimed_until=item.claimed_until, payload=item.payload)
        item.review_due = DunningCase.objects.filter(
            account_id=item.account_id, state__in=OPEN_STATES, next_review_at__lte=now
        ).exists()
    return item
