"""The snapshot of one account in one round trip, on PostgreSQL.

`snapshot_sql`'s ten statements cost ten round trips, and PostgreSQL parses and plans
each: about 1.3-1.5 ms against 0.2 ms for a bare lock and update. Here the same columns and
conditions (snapshot_sql's, shared with `snapshot_batch`) are one statement: the account's
one-value facts as columns, each other store as a `json_agg` of its rows (keyed by the
column names, so rows are still read by name), the open case's id and the window of ended
side effects worked out inside the statement.

The lock is a statement of its own, sent in the same message: under READ COMMITTED a
statement reads the data as of its start, so a read that had to wait for the lock inside
itself would not see what the holder committed. The read starts after the lock is held, as
`snapshot_sql`'s later statements do.
"""

import json
from datetime import datetime, timedelta

from django.db import connection

from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from core.locks import account_lock_clause
from core.prepared import PreparedStatement
from dunning.in_dunning import WENT_THROUGH_DUNNING
from dunning.models import CaseInvoice, CustomerNotice, DunningCase, OutboxItem
from dunning.policy import SeverityRules
from dunning.snapshot import Snapshot
from dunning.snapshot_rows import CASE_TIMES, AccountRows, _attempt, _case, _invoice
from dunning.snapshot_sql import (
    ACCOUNT_COLUMNS,
    ATTEMPT_COLUMNS,
    CASE_COLUMNS,
    ENDED_COLUMNS,
    ENDED_KINDS,
    INVOICE_COLUMNS,
    NOTICE_COLUMNS,
    NOTICE_MEMORY,
    NOTICES_KEPT,
    OPEN,
    PENDING_COLUMNS,
    RESTRICTION_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    _t,
    as_snapshot,
    candidate_invoices,
    read_rows_in_ten,
)
from entitlements.models import Restriction

LOCK = f"SELECT a.id FROM {_t(Account)} a WHERE a.id = %s"

# The open case, else (without one) the resolved case of the trigger's invoice: one row at
# most, as `lock_and_read` takes the first of OPEN_CASE, then of CASE_OF_INVOICE.
_CASE = f"""
  (SELECT {CASE_COLUMNS} FROM {_t(DunningCase)} c, k
   WHERE c.account_id = k.account AND c.state IN ({OPEN}))
  UNION ALL
  (SELECT {CASE_COLUMNS} FROM {_t(DunningCase)} c
   JOIN {_t(CaseInvoice)} ci ON ci.case_id = c.id
   JOIN {_t(Invoice)} i ON i.id = ci.invoice_id CROSS JOIN k
   WHERE c.account_id = k.account AND i.stripe_invoice_id = k.hint
     AND NOT EXISTS (SELECT 1 FROM {_t(DunningCase)} o
                     WHERE o.account_id = k.account AND o.state IN ({OPEN})))
  LIMIT 1"""


def _rows(columns: str, source: str, order: str = "") -> str:
    """The rows of `source` as one json array of objects keyed by column name."""
    order = f" ORDER BY {order}" if order else ""
    return f"(SELECT json_agg(x{order}) FROM (SELECT {columns} FROM {source}) x)"


_OUTBOX, _ATTEMPTS = _t(OutboxItem), _t(PaymentAttempt)
# Each store's rows, its conditions as snapshot_sql's statements have them.
ATTEMPTS = _rows(
    ATTEMPT_COLUMNS,
    f"{_ATTEMPTS} p WHERE p.invoice_id IN (SELECT pk FROM inv)",
    "x.attempted_at, x.pk",
)
PENDING = _rows(
    PENDING_COLUMNS, f"{_OUTBOX} o WHERE o.account_id = a.id AND o.status = 'pending'", "x.id"
)
# Since the case opened, or over the look-up window when that is longer (`ended_since`):
# LEAST skips the NULL of no case.
ENDED = _rows(
    f"o.id AS _id, {ENDED_COLUMNS}",
    f"""{_OUTBOX} o WHERE o.account_id = a.id
      AND o.created_at >= LEAST(k.lookup_since, (SELECT opened_at FROM kase)) AND {ENDED_KINDS}""",
    "x._id",
)
CARD_HISTORY = _rows(
    ATTEMPT_COLUMNS,
    f"{_ATTEMPTS} p WHERE p.account_id = a.id AND p.attempted_at > k.card_since",
    "x.attempted_at, x.pk",
)
SUBSCRIPTIONS = _rows(SUBSCRIPTION_COLUMNS, f"{_t(Subscription)} s WHERE s.account_id = a.id")
RESTRICTIONS = _rows(RESTRICTION_COLUMNS, f"{_t(Restriction)} r WHERE r.account_id = a.id")
_KEPT = NOTICES_KEPT.format(case="(SELECT pk FROM kase)").replace("%s", "k.notice_since")
NOTICES = _rows(NOTICE_COLUMNS, f"{_t(CustomerNotice)} n WHERE n.account_id = a.id AND {_KEPT}")

# Scalar subqueries: `k` cannot be joined inside the FROM clause it is part of.
_CANDIDATES = candidate_invoices(
    "(SELECT account FROM k)", "(SELECT pk FROM kase)", "(SELECT hint FROM k)"
)

# The parameters, in the order they appear: ACCOUNT_COLUMNS' two (the good-payer threshold,
# the start of the severity memory) come after the first CTE's five.
READ = f"""
WITH k AS NOT MATERIALIZED (
  SELECT %s::bigint AS account, %s::text AS hint, %s::timestamptz AS lookup_since,
    %s::timestamptz AS card_since, %s::timestamptz AS notice_since),
kase AS ({_CASE}),
inv AS (
  SELECT {INVOICE_COLUMNS}
  FROM {_CANDIDATES}, k
  WHERE (
    {WENT_THROUGH_DUNNING}
    OR ci.case_id = (SELECT pk FROM kase)
    OR i.stripe_invoice_id = k.hint))
SELECT row_to_json(h)::text FROM (SELECT {ACCOUNT_COLUMNS},
  (SELECT row_to_json(kase) FROM kase) AS kase,
  (SELECT json_agg(inv ORDER BY inv.pk) FROM inv) AS invoices,
  {ATTEMPTS} AS attempts, {PENDING} AS pending, {ENDED} AS ended,
  {CARD_HISTORY} AS card_history, {SUBSCRIPTIONS} AS subscriptions,
  {RESTRICTIONS} AS restrictions, {NOTICES} AS notices
FROM {_t(Account)} a, k WHERE a.id = k.account) h"""

HEAD_TIMES = ("payment_method_updated_at", "card_expiring_at")
INVOICE_TIMES = ("payment_failed_at", "finalized_at", "stripe_created", "updated_at")
PENDING_TIMES = ("next_attempt_at", "claimed_until", "created_at")


def _times(row: dict, names: tuple[str, ...]) -> dict:
    """JSON carries times as ISO 8601 text (UTC, the session's time zone)."""
    for name in names:
        if (value := row[name]) is not None:
            row[name] = datetime.fromisoformat(value)
    return row


# READ is prepared once per session (`core.prepared`): planning it cost about 1.4 ms a
# time, twice what running it costs.
READ_PREPARED = PreparedStatement(
    "dunning_snapshot_read",
    READ,
    ["bigint", "text", "timestamptz", "timestamptz", "timestamptz", "bigint", "timestamptz"],
)


def lock_and_read(
    *,
    account_id: int,
    now: datetime,
    card_window: timedelta,
    memory: timedelta,
    lookup_window: timedelta = timedelta(days=2),
    invoice_hint: str = "",
    lock: bool = True,
    paid_enough: int = SeverityRules.good_payer_min_paid,
) -> tuple[Account, Snapshot]:
    """Lock the account row (`core.locks`) and read its snapshot: in one round trip on
    PostgreSQL, elsewhere (SQLite, the embedded default) in `snapshot_sql`'s ten statements.
    Call inside a transaction. `lock=False` reads without the lock (a preview). Paid
    invoices are counted up to `paid_enough` (the good-payer threshold). Raises
    Account.DoesNotExist for an unknown account."""
    read = read_rows if connection.vendor == "postgresql" else read_rows_in_ten
    rows = read(
        account_id=account_id,
        now=now,
        card_window=card_window,
        memory=memory,
        lookup_window=lookup_window,
        invoice_hint=invoice_hint,
        lock=lock,
        paid_enough=paid_enough,
    )
    return as_snapshot(account_id, rows, now=now, memory=memory)


def read_rows(
    *,
    account_id: int,
    now: datetime,
    card_window: timedelta,
    memory: timedelta,
    lookup_window: timedelta,
    invoice_hint: str,
    lock: bool,
    paid_enough: int,
) -> AccountRows | None:
    """The account's rows, the account row locked first with `lock`; None without one."""
    params = [
        account_id,
        invoice_hint or None,
        now - lookup_window,
        now - card_window,
        now - NOTICE_MEMORY,
        paid_enough,
        now - memory,
    ]
    statements = [READ_PREPARED.sql_to_send()]
    if lock:
        statements.insert(0, LOCK + account_lock_clause("a"))
        params.insert(0, account_id)
    with connection.cursor() as cursor:
        # One message, one round trip (the simple query protocol runs each statement of it
        # with a snapshot of its own). psycopg's pipeline mode took two more: a sync after
        # the BEGIN it sends, and one at the end.
        cursor.execute(";\n".join(statements), params)
        for _ in statements[1:]:
            cursor.nextset()
        found = cursor.fetchone()
        if found is None:
            return None
        # The whole row as one json text, one json.loads: psycopg's cursor.description
        # alone cost 160 µs for the row's 24 columns, more than decoding all of it.
        head = _times(json.loads(found[0]), HEAD_TIMES)
    case = head.pop("kase")
    rows = AccountRows(head=head, case=_case(_times(case, CASE_TIMES)) if case else None)
    rows.invoices = [_invoice(_times(row, INVOICE_TIMES)) for row in head.pop("invoices") or ()]
    rows.attempts = [_attempt(_times(row, ("attempted_at",))) for row in head.pop("attempts") or ()]
    rows.pending = [_times(row, PENDING_TIMES) for row in head.pop("pending") or ()]
    rows.ended = [_times(row, ("created_at",)) for row in head.pop("ended") or ()]
    rows.card_history = [
        _attempt(_times(row, ("attempted_at",))) for row in head.pop("card_history") or ()
    ]
    rows.subscriptions = head.pop("subscriptions") or []
    rows.restrictions = head.pop("restrictions") or []
    rows.notices = [_times(row, ("due_at", "claimed_at")) for row in head.pop("notices") or ()]
    return rows
