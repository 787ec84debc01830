"""The engine's side: write the planned messages down, in the recompute's transaction.

A new message becomes a `CustomerNotice` row and one outbox item due on its day; in shadow
mode only the row ("would send"), never an item. A message no longer true is marked
withdrawn here; its item, if any, finds that out when it comes due and closes itself, so
the outbox stays the only writer of an item's status.
"""

from datetime import datetime

from django.conf import settings
from django.db import connection

from core.prepared import PreparedStatement
from core.row_sql import RowUpdate, insert_params, insert_sql
from dunning.models import CustomerNotice, Decision, OutboxItem
from dunning.outbox_items import add_item, new_item

Status = CustomerNotice.Status

_NOTICE, _NOTICE_TYPES = insert_sql(CustomerNotice, prefix="n_")
# The item's payload names the notice written in the same statement.
_ITEM, _ITEM_TYPES = insert_sql(
    OutboxItem,
    prefix="i_",
    values={"payload": "jsonb_build_object('notice', (SELECT id FROM notice), 'kind', %(n_kind)s)"},
)
NOTICE_WITH_ITEM = PreparedStatement(
    "dunning_notice_with_item",
    f"WITH notice AS ({_NOTICE} RETURNING id) {_ITEM} RETURNING id, (SELECT id FROM notice)",
    _NOTICE_TYPES | _ITEM_TYPES,
)


def outbox_key(account_id: int, key: str) -> str:
    return f"notice:{account_id}:{key}"


def record_plan(
    *, desired, planned: dict[str, list[str]], decision: Decision, now: datetime
) -> list[int]:
    account_id = decision.account_id
    notices = {notice.key: notice for notice in desired.notices}
    enforced = desired.enforced
    ids = []
    for key in planned.get("new", ()):
        notice = notices[key]
        row = CustomerNotice(
            account_id=account_id,
            case_id=decision.case_id if notice.kind != CustomerNotice.Kind.CARD_EXPIRING else None,
            decision=decision,
            key=key,
            kind=notice.kind,
            status=Status.SCHEDULED if enforced else Status.SHADOW,
            channel=settings.DUNNING_NOTICE_CHANNEL,
            due_at=notice.due_at,
            facts=notice.facts,
            created_at=now,
        )
        if enforced:
            ids.append(_create_with_item(row, decision, now))
        else:
            row.save()
    if planned.get("promoted"):
        rows = CustomerNotice.objects.filter(
            account_id=account_id, key__in=planned["promoted"], status=Status.SHADOW
        )
        for row in rows:
            row.status = Status.SCHEDULED
            row.due_at = notices[row.key].due_at
            row.save(update_fields=["status", "due_at"])
            ids.append(_enqueue(row, decision, now))
    if planned.get("withdrawn"):
        _withdraw(account_id, planned["withdrawn"], f"no longer true: {desired.summary()}"[:255])
    for key in planned.get("rescheduled", ()):
        due = notices[key].due_at
        CustomerNotice.objects.filter(
            account_id=account_id, key=key, status__in=(Status.SCHEDULED, Status.SHADOW)
        ).update(due_at=due, facts=notices[key].facts)
        # The waiting item moves with it (one not yet claimed; a claimed one re-checks).
        OutboxItem.objects.filter(
            key=outbox_key(account_id, key), status=OutboxItem.Status.PENDING
        ).exclude(claimed_until__gt=now).update(next_attempt_at=due)
    return ids


# A message no longer true, if it has not gone yet.
WITHDRAW = RowUpdate(
    "dunning_notice_withdraw",
    CustomerNotice,
    where=f"account_id = %(account)s AND key = ANY(%(keys)s)"
    f" AND status IN ('{Status.SCHEDULED}', '{Status.SHADOW}')",
    where_types={"account": "bigint", "keys": "text[]"},
)


def _withdraw(account_id: int, keys: list[str], reason: str) -> None:
    withdrawn = {"status": Status.WITHDRAWN, "reason": reason}
    if connection.vendor == "postgresql":
        WITHDRAW.send(withdrawn, account=account_id, keys=list(keys))
        return
    CustomerNotice.objects.filter(
        account_id=account_id, key__in=keys, status__in=(Status.SCHEDULED, Status.SHADOW)
    ).update(**withdrawn)


def _create_with_item(row: CustomerNotice, decision: Decision, now: datetime) -> int:
    """The notice and its outbox item in one statement (the item names the new row): one
    round trip less for every message planned."""
    if connection.vendor != "postgresql":
        row.save()
        return _enqueue(row, decision, now)
    item = new_item(**_item_of(row, decision, now), payload=None)
    params = insert_params(row, prefix="n_") | insert_params(item, prefix="i_", skip=("payload",))
    with connection.cursor() as cursor:
        cursor.execute(NOTICE_WITH_ITEM.sql_to_send(), params)
        item_id, row.pk = cursor.fetchone()
    row._state.adding = False
    return item_id


def _enqueue(row: CustomerNotice, decision: Decision, now: datetime) -> int:
    return add_item(**_item_of(row, decision, now), payload={"notice": row.pk, "kind": row.kind})


def _item_of(row: CustomerNotice, decision: Decision, now: datetime) -> dict:
    """A notice's outbox item, all but its payload (which names the notice's row)."""
    return {
        "account_id": row.account_id,
        "decision_id": decision.pk,
        "kind": OutboxItem.Kind.CUSTOMER_NOTICE,
        "key": outbox_key(row.account_id, row.key),
        "due": row.due_at,
        "now": now,
    }
