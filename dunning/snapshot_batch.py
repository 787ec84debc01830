"""Many accounts' snapshots at once, without the lock: what the drift scan reads.

A snapshot read costs at least one round trip per account, and the scan reads tens of
thousands of accounts. Here each of `snapshot_sql`'s ten statements runs once for a whole batch: the
account ids as one array (`= ANY(%s)`), or, where a statement needs a value of each account
(its case, how far back its ended side effects count), arrays of pairs through `unnest`.
The columns, conditions and row helpers are snapshot_sql's own, and the rows become
snapshots through its `assemble`, so a batch snapshot is the one `lock_and_read` reads.

PostgreSQL only (arrays): on SQLite, the embedded default, each account is read alone.
"""

from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction
from psycopg.types.datetime import TimestamptzLoader

from billing_events.models import Account, PaymentAttempt, Subscription
from dunning import rollout
from dunning.in_dunning import WENT_THROUGH_DUNNING
from dunning.models import CustomerNotice, DunningCase, OutboxItem
from dunning.policy import Policy
from dunning.policy_versions import paid_count_cap
from dunning.snapshot import Snapshot
from dunning.snapshot_pg import lock_and_read
from dunning.snapshot_rows import (
    AccountRows,
    _attempt,
    _case,
    _invoice,
    _named,
    assemble,
    ended_since,
)
from dunning.snapshot_sql import (
    ACCOUNT_COLUMNS,
    ATTEMPT_COLUMNS,
    CASE_COLUMNS,
    ENDED_COLUMNS,
    ENDED_KINDS,
    INVOICE_CASE,
    INVOICE_COLUMNS,
    NOTICE_COLUMNS,
    NOTICE_MEMORY,
    NOTICES_KEPT,
    OPEN,
    PENDING_COLUMNS,
    RESTRICTION_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    _t,
)
from entitlements.models import Restriction

ACCOUNTS = f"""
SELECT {ACCOUNT_COLUMNS}
FROM {_t(Account)} a WHERE a.id = ANY(%s::bigint[])"""

OPEN_CASES = f"""
SELECT c.account_id AS account, {CASE_COLUMNS} FROM {_t(DunningCase)} c
WHERE c.account_id = ANY(%s::bigint[]) AND c.state IN ({OPEN})"""

# Each account with its open case's id (-1 without one), as INVOICES takes them. Each
# account's invoices are read as the one-account statement reads them, by index: as a plain
# join (or a LATERAL one without OFFSET 0, which PostgreSQL flattens into one) it was
# planned as a hash join over every case invoice of the book, a cost growing with the book.
INVOICES = f"""
SELECT k.account, i.*
FROM unnest(%s::bigint[], %s::bigint[]) AS k(account, case_pk), LATERAL (
  SELECT {INVOICE_COLUMNS}
  FROM {INVOICE_CASE}
  WHERE i.account_id = k.account AND (
    {WENT_THROUGH_DUNNING}
    OR ci.case_id = k.case_pk)
  OFFSET 0) AS i
ORDER BY i.pk"""

ATTEMPTS = f"""
SELECT {ATTEMPT_COLUMNS}
FROM {_t(PaymentAttempt)} p WHERE p.invoice_id = ANY(%s::bigint[])
ORDER BY p.attempted_at, p.id"""

CARD_HISTORIES = f"""
SELECT p.account_id AS account, {ATTEMPT_COLUMNS}
FROM {_t(PaymentAttempt)} p WHERE p.account_id = ANY(%s::bigint[]) AND p.attempted_at > %s
ORDER BY p.attempted_at, p.id"""

# The outbox and the notices are read account by account through their account index, as
# INVOICES is (LATERAL ... OFFSET 0): as a plain join or `= ANY`, PostgreSQL chose to read
# the whole table in each batch while it was small next to a batch (with 4,000 accounts in
# dunning: 10,600 outbox rows read for 752 kept, every one of 8,000 notices; 28 of a
# batch's 50 ms), a cost per batch growing with the accounts in dunning.
PENDING_OUTBOX = f"""
SELECT k.account, {PENDING_COLUMNS}
FROM unnest(%s::bigint[]) AS k(account), LATERAL (
  SELECT {PENDING_COLUMNS}
  FROM {_t(OutboxItem)} o WHERE o.account_id = k.account AND o.status = 'pending'
  OFFSET 0) AS o
ORDER BY o.id"""

# Each account with the moment its ended side effects count from.
ENDED_EFFECTS = f"""
SELECT k.account, {ENDED_COLUMNS}
FROM unnest(%s::bigint[], %s::timestamptz[]) AS k(account, since), LATERAL (
  SELECT o.id, {ENDED_COLUMNS}
  FROM {_t(OutboxItem)} o
  WHERE o.account_id = k.account AND o.created_at >= k.since AND {ENDED_KINDS}
  OFFSET 0) AS o
ORDER BY o.id"""

SUBSCRIPTIONS = f"""
SELECT s.account_id AS account, {SUBSCRIPTION_COLUMNS}
FROM {_t(Subscription)} s WHERE s.account_id = ANY(%s::bigint[])"""

RESTRICTIONS = f"""
SELECT r.account_id AS account, {RESTRICTION_COLUMNS}
FROM {_t(Restriction)} r WHERE r.account_id = ANY(%s::bigint[])"""

NOTICES = f"""
SELECT k.account, {NOTICE_COLUMNS}
FROM unnest(%s::bigint[], %s::bigint[]) AS k(account, case_pk), LATERAL (
  SELECT {NOTICE_COLUMNS}
  FROM {_t(CustomerNotice)} n
  WHERE n.account_id = k.account AND {NOTICES_KEPT.format(case="k.case_pk")}
  OFFSET 0) AS n"""


def read_snapshots(
    account_ids: Iterable[int], *, now: datetime, policy: Policy
) -> dict[int, Snapshot]:
    """The snapshot of each account as the engine would read it at `now` (no trigger's
    invoice hint), without locking anything. Unknown accounts are left out."""
    account_ids = list(dict.fromkeys(account_ids))
    windows = {
        # As dunning.engine.read_snapshot passes them (tests hold the two together).
        "card_window": policy.retries.card_attempt_window,
        "memory": policy.severity.memory,
        "lookup_window": policy.retries.unknown_class_wait * 2,
        "paid_enough": paid_count_cap(policy),
    }
    if not account_ids:
        return {}
    if connection.vendor != "postgresql":
        return _one_by_one(account_ids, now=now, windows=windows)
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        # psycopg's own (compiled) timestamptz loader: a batch reads about 18 times per
        # account, and Django's loader, in Python, was a tenth of the scan. The session
        # time zone is UTC, so both give the same aware UTC datetimes.
        cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        if outermost:
            # Ten statements, one view: nothing committed between two of them shows up
            # as a snapshot no single moment had (a drift that is not there).
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        rows = _read_rows(cursor, account_ids, now=now, windows=windows)
    return {
        account_id: assemble(account_id, found, now=now, memory=windows["memory"])
        for account_id, found in rows.items()
    }


def _read_rows(cursor, account_ids: list[int], *, now: datetime, windows: dict) -> dict:
    cursor.execute(ACCOUNTS, [windows["paid_enough"], now - windows["memory"], _array(account_ids)])
    rows = {head["id"]: AccountRows(head=head) for head in _named(cursor)}
    ids = sorted(rows)  # the accounts that exist
    if not ids:
        return {}
    accounts = _array(ids)
    # The gate is one row, the same for every account: its default is worked out once.
    stage = rows[ids[0]].head["stage"] or rollout.default_stage()
    for found in rows.values():
        found.head["stage"] = stage

    cursor.execute(OPEN_CASES, [accounts])
    for row in _named(cursor):
        account_id = row.pop("account")
        rows[account_id].case = _case(row)
    case_pks = _array(rows[a].case.pk if rows[a].case else -1 for a in ids)

    cursor.execute(INVOICES, [accounts, case_pks])
    account_of_invoice = {}
    for row in _named(cursor):
        account_id = row.pop("account")
        invoice = _invoice(row)
        rows[account_id].invoices.append(invoice)
        account_of_invoice[invoice.pk] = account_id
    if account_of_invoice:
        cursor.execute(ATTEMPTS, [_array(account_of_invoice)])
        for row in _named(cursor):
            attempt = _attempt(row)
            rows[account_of_invoice[attempt.invoice_pk]].attempts.append(attempt)

    cursor.execute(PENDING_OUTBOX, [accounts])
    for row in _named(cursor):
        rows[row.pop("account")].pending.append(row)
    since = (ended_since(rows[a].case, now, windows["lookup_window"]) for a in ids)
    cursor.execute(ENDED_EFFECTS, [accounts, _array(since)])
    for row in _named(cursor):
        rows[row.pop("account")].ended.append(row)
    cursor.execute(CARD_HISTORIES, [accounts, now - windows["card_window"]])
    for row in _named(cursor):
        account_id = row.pop("account")
        rows[account_id].card_history.append(_attempt(row))
    cursor.execute(SUBSCRIPTIONS, [accounts])
    for row in _named(cursor):
        rows[row.pop("account")].subscriptions.append(row)
    cursor.execute(RESTRICTIONS, [accounts])
    for row in _named(cursor):
        rows[row.pop("account")].restrictions.append(row)
    cursor.execute(NOTICES, [accounts, case_pks, now - NOTICE_MEMORY])
    for row in _named(cursor):
        rows[row.pop("account")].notices.append(row)
    return rows


def _array(values: Iterable[int | datetime]) -> str:
    """An array parameter as one PostgreSQL array literal: psycopg dumps a Python list
    element by element, in Python, which cost as much as a statement's round trip."""
    return (
        "{" + ",".join(str(v) if isinstance(v, int) else f'"{v.isoformat()}"' for v in values) + "}"
    )


def _one_by_one(account_ids: list[int], *, now: datetime, windows: dict) -> dict:
    snapshots = {}
    for account_id in account_ids:
        try:
            with transaction.atomic():
                _, snapshot = lock_and_read(account_id=account_id, now=now, lock=False, **windows)
        except Account.DoesNotExist:
            continue
        snapshots[account_id] = snapshot
    return snapshots
