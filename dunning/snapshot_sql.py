"""Lock an account and read its snapshot in ten plain SQL statements.

The recompute is the hot path, and building ORM querysets cost more than running them
(about 0.7 ms of Python per query against 0.1 ms in PostgreSQL), so these statements are
written once, from the models' own table names, and run as they are. They are plain SQL
that PostgreSQL and SQLite (the embedded default) both run; the row lock is PostgreSQL's.
The column lists and conditions are shared with `snapshot_batch` (many accounts per
statement, for the drift scan); both read rows by column name, never by position, and turn
them into a Snapshot through `snapshot_rows.assemble`.
"""

from datetime import datetime, timedelta

from django.db import connection

from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from core.locks import account_lock_clause
from dunning.in_dunning import UNSETTLED, WENT_THROUGH_DUNNING
from dunning.models import (
    OPEN_STATES,
    AccountStanding,
    BadDebtEpisode,
    CaseInvoice,
    CustomerNotice,
    DunningCase,
    OutboxItem,
    PolicyVersion,
    RolloutGate,
)
from dunning.snapshot import CASE_FIELDS, Snapshot, aware
from dunning.snapshot_rows import (
    AccountRows,
    _attempt,
    _case,
    _invoice,
    _json,
    _named,
    assemble,
    ended_since,
)
from entitlements.models import Restriction


def _t(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


OPEN = ", ".join(f"'{state}'" for state in OPEN_STATES)
Kind = OutboxItem.Kind

# The account row and its one-value facts. The first `%s` is the good-payer threshold:
# paid invoices are counted up to it and no further, so the count costs the same for a
# decade of history as for a year (the rule only asks "at least that many?"). The second
# is the start of the severity memory.
ACCOUNT_COLUMNS = f"""a.id, a.stripe_customer_id, a.payment_method_updated_at,
  a.default_payment_method, a.card_expiring_at, a.email, a.preferred_locales,
  (SELECT s.requested FROM {_t(AccountStanding)} s WHERE s.account_id = a.id) AS requested,
  (SELECT s.acknowledged FROM {_t(AccountStanding)} s WHERE s.account_id = a.id) AS acknowledged,
  (SELECT e.reason FROM {_t(BadDebtEpisode)} e
     WHERE e.account_id = a.id AND e.exited_at IS NULL) AS episode,
  (SELECT COUNT(*) FROM (SELECT 1 FROM {_t(Invoice)} i
     WHERE i.account_id = a.id AND i.status = 'paid' LIMIT %s) p) AS paid,
  (SELECT COUNT(*) FROM {_t(DunningCase)} c
     WHERE c.account_id = a.id AND c.opened_at > %s) AS cases,
  (SELECT g.stage FROM {_t(RolloutGate)} g WHERE g.id = 1) AS stage,
  (SELECT g.kill_switch FROM {_t(RolloutGate)} g WHERE g.id = 1) AS kill_switch,
  (SELECT g.allowlist FROM {_t(RolloutGate)} g WHERE g.id = 1) AS allowlist,
  (SELECT v.number FROM {_t(PolicyVersion)} v WHERE v.active) AS policy_active,
  (SELECT v.number FROM {_t(PolicyVersion)} v WHERE v.candidate) AS policy_candidate"""

ACCOUNT = f"""
SELECT {ACCOUNT_COLUMNS}
FROM {_t(Account)} a WHERE a.id = %s"""

# The case as the engine reads it: every CaseView field, by name.
CASE_COLUMNS = ", ".join("c.id AS pk" if name == "pk" else f"c.{name}" for name in CASE_FIELDS)

OPEN_CASE = f"""
SELECT {CASE_COLUMNS} FROM {_t(DunningCase)} c
WHERE c.account_id = %s AND c.state IN ({OPEN})"""

CASE_OF_INVOICE = f"""
SELECT {CASE_COLUMNS} FROM {_t(DunningCase)} c
JOIN {_t(CaseInvoice)} ci ON ci.case_id = c.id
JOIN {_t(Invoice)} i ON i.id = ci.invoice_id
WHERE c.account_id = %s AND i.stripe_invoice_id = %s"""

INVOICE_COLUMNS = """i.id AS pk, i.stripe_invoice_id, i.status, i.amount_remaining,
  i.currency, i.billing_reason, i.attempt_count, i.payment_failed_at, i.paid_out_of_band,
  i.finalized_at, i.stripe_created,
  i.stripe_subscription_id AS subscription_id, ci.case_id, i.version AS updated_at"""
INVOICE_CASE = f"{_t(Invoice)} i LEFT JOIN {_t(CaseInvoice)} ci ON ci.invoice_id = i.id"


def candidate_invoices(account: str, case: str, hint: str) -> str:
    """A FROM clause of the account's invoices the snapshot may load, as `i` with its case
    link `ci`: the unsettled ones (through the (account, status) index), the case's, and the
    one the trigger names. Each branch checks the account itself, the case's by the
    invoice's id; the exact conditions go on top. With an `i.account_id` condition outside,
    or the case's invoices joined by account, PostgreSQL read all of the account's invoices
    by account instead of these few by id, and a recompute's cost grew with its history."""
    invoice = _t(Invoice)
    return f"""(
    SELECT u.id FROM {invoice} u WHERE u.account_id = {account} AND u.status IN ({UNSETTLED})
    UNION SELECT c.invoice_id FROM {_t(CaseInvoice)} c
      WHERE c.case_id = {case}
        AND (SELECT ci_i.account_id FROM {invoice} ci_i WHERE ci_i.id = c.invoice_id) = {account}
    UNION SELECT h.id FROM {invoice} h
      WHERE h.stripe_invoice_id = {hint} AND h.account_id = {account}) candidate
  JOIN {invoice} i ON i.id = candidate.id
  LEFT JOIN {_t(CaseInvoice)} ci ON ci.invoice_id = i.id"""


# The unsettled invoices in dunning (`in_dunning`), plus the case's own and the one the
# trigger names.
INVOICES = f"""
SELECT {INVOICE_COLUMNS}
FROM {candidate_invoices("%(account)s", "%(case)s", "%(hint)s")}
WHERE (
  {WENT_THROUGH_DUNNING}
  OR ci.case_id = %(case)s
  OR i.stripe_invoice_id = %(hint)s)
ORDER BY i.id"""

ATTEMPT_COLUMNS = """p.invoice_id AS invoice_pk, p.outcome,
  COALESCE(NULLIF(p.decline_code, ''), p.failure_code) AS decline_code, p.advice_code,
  p.network_advice_code, p.network_decline_code, p.payment_method, p.attempted_at,
  p.card_brand, p.customer_initiated, p.id AS pk"""

ATTEMPTS = f"""
SELECT {ATTEMPT_COLUMNS}
FROM {_t(PaymentAttempt)} p WHERE p.invoice_id IN ({{ids}})
ORDER BY p.attempted_at, p.id"""

# Every attempt of the account within the longest network window, on any invoice.
CARD_HISTORY = f"""
SELECT {ATTEMPT_COLUMNS}
FROM {_t(PaymentAttempt)} p WHERE p.account_id = %s AND p.attempted_at > %s
ORDER BY p.attempted_at, p.id"""

PENDING_COLUMNS = "o.id, o.kind, o.payload, o.next_attempt_at, o.claimed_until, o.created_at"
# In id order, both: a look-up asked twice reads as asked the later time, whatever the plan.
PENDING_OUTBOX = f"""
SELECT {PENDING_COLUMNS}
FROM {_t(OutboxItem)} o WHERE o.account_id = %s AND o.status = 'pending'
ORDER BY o.id"""

# Side effects that ended (done or dead) since the case opened: facts the engine reads.
ENDED_COLUMNS = "o.kind, o.status, o.created_at, o.payload, o.last_error"
ENDED_KINDS = f"""o.status IN ('done', 'dead')
  AND o.kind IN ('{Kind.CANCEL_SUBSCRIPTION}', '{Kind.REVERT_UPGRADE}', '{Kind.FAILURE_LOOKUP}')"""
ENDED_EFFECTS = f"""
SELECT {ENDED_COLUMNS}
FROM {_t(OutboxItem)} o
WHERE o.account_id = %s AND o.created_at >= %s AND {ENDED_KINDS}
ORDER BY o.id"""

SUBSCRIPTION_COLUMNS = "s.stripe_subscription_id, s.status, s.items_before_upgrade"
SUBSCRIPTIONS = f"""
SELECT {SUBSCRIPTION_COLUMNS}
FROM {_t(Subscription)} s WHERE s.account_id = %s"""

# The case's notices, and the account's recent (due or claimed) or still waiting ones (card
# expiry). A message's claim reads the last day's claims from here (one message a day).
NOTICE_COLUMNS = "n.key, n.kind, n.status, n.due_at, n.claimed_at"
NOTICES_KEPT = (
    "(n.case_id = {case} OR n.status = 'scheduled'"
    " OR (CASE WHEN n.claimed_at > n.due_at THEN n.claimed_at ELSE n.due_at END) > %s)"
)
NOTICES = f"""
SELECT {NOTICE_COLUMNS} FROM {_t(CustomerNotice)} n
WHERE n.account_id = %s AND {NOTICES_KEPT.format(case="%s")}"""
NOTICE_MEMORY = timedelta(days=60)

RESTRICTION_COLUMNS = "r.code, r.level"
RESTRICTIONS = f"""
SELECT {RESTRICTION_COLUMNS} FROM {_t(Restriction)} r WHERE r.account_id = %s"""


def _param(value: datetime) -> object:
    return connection.ops.adapt_datetimefield_value(value)


def as_snapshot(
    account_id: int, rows: AccountRows | None, *, now: datetime, memory: timedelta
) -> tuple[Account, Snapshot]:
    """The account and its snapshot from a reader's rows (None: no such account)."""
    if rows is None:
        raise Account.DoesNotExist(f"no account {account_id}")
    head = rows.head
    account = Account(
        pk=account_id,
        stripe_customer_id=head["stripe_customer_id"],
        payment_method_updated_at=aware(head["payment_method_updated_at"]),
        default_payment_method=head["default_payment_method"],
        email=head["email"],
        preferred_locales=_json(head["preferred_locales"]) or [],
    )
    return account, assemble(account_id, rows, now=now, memory=memory)


def read_rows_in_ten(
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
    """The account's rows in the ten statements, the first locking the account row with
    `lock`; None without an account."""
    lock_sql = account_lock_clause("a") if lock else ""
    with connection.cursor() as cursor:
        cursor.execute(ACCOUNT + lock_sql, [paid_enough, _param(now - memory), account_id])
        found = _named(cursor)
        if not found:
            return None
        rows = AccountRows(head=found[0])

        cursor.execute(OPEN_CASE, [account_id])
        cases = _named(cursor)
        if not cases and invoice_hint:
            # A late event about a resolved case's invoice refines that case's record.
            cursor.execute(CASE_OF_INVOICE, [account_id, invoice_hint])
            cases = _named(cursor)
        case = rows.case = _case(cases[0]) if cases else None

        case_pk = case.pk if case else -1
        cursor.execute(
            INVOICES, {"account": account_id, "case": case_pk, "hint": invoice_hint or None}
        )
        rows.invoices = [_invoice(row) for row in _named(cursor)]
        if rows.invoices:
            ids = [invoice.pk for invoice in rows.invoices]
            cursor.execute(ATTEMPTS.format(ids=", ".join(["%s"] * len(ids))), ids)
            rows.attempts = [_attempt(row) for row in _named(cursor)]

        cursor.execute(PENDING_OUTBOX, [account_id])
        rows.pending = _named(cursor)
        since = ended_since(case, now, lookup_window)
        cursor.execute(ENDED_EFFECTS, [account_id, _param(since)])
        rows.ended = _named(cursor)
        cursor.execute(CARD_HISTORY, [account_id, _param(now - card_window)])
        rows.card_history = [_attempt(row) for row in _named(cursor)]
        cursor.execute(SUBSCRIPTIONS, [account_id])
        rows.subscriptions = _named(cursor)
        cursor.execute(RESTRICTIONS, [account_id])
        rows.restrictions = _named(cursor)
        cursor.execute(NOTICES, [account_id, case.pk if case else -1, _param(now - NOTICE_MEMORY)])
        rows.notices = _named(cursor)
    return rows
