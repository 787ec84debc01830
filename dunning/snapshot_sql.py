"""Lock an account and read its snapshot in ten plain SQL statements.

The recompute is the hot path, and building ORM querysets cost more than running them
(about 0.7 ms of Python per query against 0.1 ms in PostgreSQL), so these statements are
written once, from the models' own table names, and run as they are. They are plain SQL
that PostgreSQL and SQLite (the embedded default) both run; the row lock is PostgreSQL's.
Rows are read by column name, never by position. The column lists, conditions and row
helpers are shared with `snapshot_batch` (many accounts per statement, for the drift scan),
and both turn rows into a Snapshot through `assemble`.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection

from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from dunning import rollout
from dunning.models import (
    OPEN_STATES,
    AccountStanding,
    BadDebtEpisode,
    CaseInvoice,
    CustomerNotice,
    DunningCase,
    OutboxItem,
    RolloutGate,
)
from dunning.policy import SeverityRules
from dunning.snapshot import (
    DEFAULT_STANDING,
    AttemptView,
    CaseView,
    InvoiceView,
    NoticeView,
    ScheduledRetry,
    Snapshot,
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
  a.default_payment_method, a.card_expiring_at,
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
  (SELECT g.allowlist FROM {_t(RolloutGate)} g WHERE g.id = 1) AS allowlist"""

ACCOUNT = f"""
SELECT {ACCOUNT_COLUMNS}
FROM {_t(Account)} a WHERE a.id = %s"""

# The case as the engine reads it: every CaseView field, by name.
CASE_COLUMNS = """c.id AS pk, c.state, c.resolution, c.level, c.level_since, c.decline_class,
  c.earliest_unpaid_at, c.amount_overdue, c.next_review_at, c.next_retry_at, c.paused_until,
  c.pause_reason, c.grace_until, c.grace_reason, c.opened_at, c.shadow"""

OPEN_CASE = f"""
SELECT {CASE_COLUMNS} FROM {_t(DunningCase)} c
WHERE c.account_id = %s AND c.state IN ({OPEN})"""

CASE_OF_INVOICE = f"""
SELECT {CASE_COLUMNS} FROM {_t(DunningCase)} c
JOIN {_t(CaseInvoice)} ci ON ci.case_id = c.id
JOIN {_t(Invoice)} i ON i.id = ci.invoice_id
WHERE c.account_id = %s AND i.stripe_invoice_id = %s"""

# The SQL twin of `decision_rules.went_through_dunning` for unsettled invoices (open or
# uncollectible), plus the case's own and the one the trigger names
# (tests/test_snapshot_rules_agree.py holds the two to each other).
INVOICE_COLUMNS = """i.id AS pk, i.stripe_invoice_id, i.status, i.amount_remaining,
  i.currency, i.billing_reason, i.attempt_count, i.payment_failed_at, i.paid_out_of_band,
  i.finalized_at, i.stripe_created,
  i.stripe_subscription_id AS subscription_id, ci.case_id, i.version AS updated_at"""
INVOICE_CASE = f"{_t(Invoice)} i LEFT JOIN {_t(CaseInvoice)} ci ON ci.invoice_id = i.id"
WENT_THROUGH_DUNNING = f"""i.status = 'uncollectible'
  OR (i.status = 'open' AND (
    i.attempt_count > 0 OR i.payment_failed_at IS NOT NULL
    OR EXISTS (SELECT 1 FROM {_t(PaymentAttempt)} p
               WHERE p.invoice_id = i.id AND p.outcome = 'failed')))"""

INVOICES = f"""
SELECT {INVOICE_COLUMNS}
FROM {INVOICE_CASE}
WHERE i.account_id = %s AND (
  {WENT_THROUGH_DUNNING}
  OR ci.case_id = %s
  OR i.stripe_invoice_id = %s)
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

# The case's notices, and the account's recent or still waiting ones (card expiry).
NOTICE_COLUMNS = "n.key, n.kind, n.status, n.due_at"
NOTICES_KEPT = "(n.case_id = {case} OR n.due_at > %s OR n.status = 'scheduled')"
NOTICES = f"""
SELECT {NOTICE_COLUMNS} FROM {_t(CustomerNotice)} n
WHERE n.account_id = %s AND {NOTICES_KEPT.format(case="%s")}"""
NOTICE_MEMORY = timedelta(days=60)

RESTRICTION_COLUMNS = "r.code, r.level"
RESTRICTIONS = f"""
SELECT {RESTRICTION_COLUMNS} FROM {_t(Restriction)} r WHERE r.account_id = %s"""


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _param(value: datetime) -> object:
    return connection.ops.adapt_datetimefield_value(value)


def _named(cursor) -> list[dict]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


CASE_TIMES = ("level_since", "earliest_unpaid_at", "next_review_at", "next_retry_at")
CASE_TIMES += ("paused_until", "grace_until", "opened_at")


def _case(row: dict) -> CaseView:
    for name in CASE_TIMES:
        row[name] = _aware(row[name])
    row["amount_overdue"] = _json(row["amount_overdue"])
    row["shadow"] = _json(row["shadow"])
    return CaseView(**row)


def _invoice(row: dict) -> InvoiceView:
    row["payment_failed_at"] = _aware(row["payment_failed_at"])
    # Both read as columns: SQLite types a column, not an expression over it.
    row["opened_at"] = _aware(row.pop("finalized_at") or row.pop("stripe_created", None))
    row.pop("stripe_created", None)
    row["updated_at"] = _aware(row["updated_at"])
    row["paid_out_of_band"] = bool(row["paid_out_of_band"])
    return InvoiceView(**row)


def _attempt(row: dict) -> AttemptView:
    row["attempted_at"] = _aware(row["attempted_at"])
    row["customer_initiated"] = bool(row["customer_initiated"])
    return AttemptView(**row)


@dataclass
class AccountRows:
    """What the statements return for one account, before it becomes a Snapshot: the one
    place both readers (this one and `snapshot_batch`) turn rows into the engine's view."""

    head: dict  # the ACCOUNT row
    case: CaseView | None = None
    invoices: list[InvoiceView] = field(default_factory=list)
    attempts: list[AttemptView] = field(default_factory=list)
    pending: list[tuple] = field(default_factory=list)  # PENDING_COLUMNS
    ended: list[tuple] = field(default_factory=list)  # ENDED_COLUMNS
    card_history: list[AttemptView] = field(default_factory=list)
    subscriptions: list[tuple] = field(default_factory=list)  # SUBSCRIPTION_COLUMNS
    restrictions: list[tuple] = field(default_factory=list)  # RESTRICTION_COLUMNS
    notices: list[tuple] = field(default_factory=list)  # NOTICE_COLUMNS


def ended_since(case: CaseView | None, now: datetime, lookup_window: timedelta) -> datetime:
    """How far back ended side effects still count: the look-up window, or the case's
    whole life when it is longer."""
    since = now - lookup_window
    if case is not None and case.opened_at is not None:
        since = min(since, case.opened_at)
    return since


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
    """Lock the account row (FOR UPDATE on PostgreSQL) and read its snapshot. Call inside
    a transaction. `lock=False` reads without the lock (the drift detector's preview).
    Paid invoices are counted up to `paid_enough` (the good-payer threshold).
    Raises Account.DoesNotExist for an unknown account."""
    row_lock = connection.features.has_select_for_update_of and lock
    lock_sql = " FOR UPDATE OF a" if row_lock else ""
    with connection.cursor() as cursor:
        cursor.execute(ACCOUNT + lock_sql, [paid_enough, _param(now - memory), account_id])
        found = _named(cursor)
        if not found:
            raise Account.DoesNotExist(f"no account {account_id}")
        head = found[0]
        rows = AccountRows(head=head)

        cursor.execute(OPEN_CASE, [account_id])
        cases = _named(cursor)
        if not cases and invoice_hint:
            # A late event about a resolved case's invoice refines that case's record.
            cursor.execute(CASE_OF_INVOICE, [account_id, invoice_hint])
            cases = _named(cursor)
        case = rows.case = _case(cases[0]) if cases else None

        cursor.execute(INVOICES, [account_id, case.pk if case else -1, invoice_hint or None])
        rows.invoices = [_invoice(row) for row in _named(cursor)]
        if rows.invoices:
            ids = [invoice.pk for invoice in rows.invoices]
            cursor.execute(ATTEMPTS.format(ids=", ".join(["%s"] * len(ids))), ids)
            rows.attempts = [_attempt(row) for row in _named(cursor)]

        cursor.execute(PENDING_OUTBOX, [account_id])
        rows.pending = cursor.fetchall()
        since = ended_since(case, now, lookup_window)
        cursor.execute(ENDED_EFFECTS, [account_id, _param(since)])
        rows.ended = cursor.fetchall()
        cursor.execute(CARD_HISTORY, [account_id, _param(now - card_window)])
        rows.card_history = [_attempt(row) for row in _named(cursor)]
        cursor.execute(SUBSCRIPTIONS, [account_id])
        rows.subscriptions = cursor.fetchall()
        cursor.execute(RESTRICTIONS, [account_id])
        rows.restrictions = cursor.fetchall()
        cursor.execute(NOTICES, [account_id, case.pk if case else -1, _param(now - NOTICE_MEMORY)])
        rows.notices = cursor.fetchall()
    account = Account(
        pk=account_id,
        stripe_customer_id=head["stripe_customer_id"],
        payment_method_updated_at=_aware(head["payment_method_updated_at"]),
        default_payment_method=head["default_payment_method"],
    )
    return account, assemble(account_id, rows, now=now, memory=memory)


def assemble(account_id: int, rows: AccountRows, *, now: datetime, memory: timedelta) -> Snapshot:
    """The snapshot from the rows the statements returned."""
    head, case = rows.head, rows.case
    pending = _pending_effects(rows.pending, now)
    ended = _ended_effects(rows.ended)
    subscription_status, items_before_upgrade = {}, {}
    for subscription_id, status, items in rows.subscriptions:
        subscription_status[subscription_id] = status
        if items := _json(items):
            items_before_upgrade[subscription_id] = tuple(
                (item["price"], item.get("quantity", 1)) for item in items
            )
    notices = {
        key: NoticeView(key, kind, status, _aware(due_at))
        for key, kind, status, due_at in rows.notices
    }

    cases = head["cases"]
    earlier_cases = cases - (1 if case is not None and case.opened_at > now - memory else 0)
    stage = head["stage"] or rollout.default_stage()
    allowlist = head["allowlist"]
    return Snapshot(
        account_id=account_id,
        invoices=tuple(rows.invoices),
        attempts=tuple(rows.attempts),
        subscription_status=subscription_status,
        case=case,
        restrictions=dict(rows.restrictions),
        standing_requested=head["requested"] or DEFAULT_STANDING,
        standing_acknowledged=head["acknowledged"] or DEFAULT_STANDING,
        payment_method_updated_at=_aware(head["payment_method_updated_at"]),
        default_payment_method=head["default_payment_method"],
        card_history=tuple(rows.card_history),
        paid_invoices=head["paid"],
        recent_cases=earlier_cases,
        bad_debt=head["episode"],
        items_before_upgrade=items_before_upgrade,
        notices=notices,
        card_expiring_at=_aware(head["card_expiring_at"]),
        enforced=rollout.in_gate(
            stripe_customer_id=head["stripe_customer_id"],
            stage=stage,
            kill_switch=bool(head["kill_switch"]),
            allowlist=_json(allowlist) if allowlist else [],
        ),
        rollout_stage=stage,
        lookups_asked={**pending.pop("lookups"), **ended["lookups"]},
        lookups_ended=frozenset(ended.pop("lookups")),
        **pending,
        **ended,
    )


def _pending_effects(rows, now: datetime) -> dict:
    scheduled_retry, in_flight = None, 0
    cancel_requested, revert_requested, lookups = set(), set(), {}
    for pk, kind, payload, next_attempt_at, claimed_until, created_at in rows:
        payload = _json(payload)
        running = claimed_until is not None and _aware(claimed_until) > now
        if kind == Kind.PAYMENT_RETRY:
            scheduled_retry = ScheduledRetry(
                outbox_pk=pk,
                stripe_invoice_id=payload["stripe_invoice_id"],
                attempt_number=payload["attempt_number"],
                at=_aware(next_attempt_at),
                running=running,
            )
            # A retry waiting for its time is a plan, not a side effect in flight.
            in_flight += running
            continue
        if kind == Kind.CANCEL_SUBSCRIPTION:
            cancel_requested.add(payload["subscription_id"])
        if kind == Kind.REVERT_UPGRADE:
            revert_requested.add(payload["subscription_id"])
        if kind == Kind.FAILURE_LOOKUP:
            lookups[payload["lookup"]] = _aware(created_at)
            continue  # asking Stripe a question holds nothing back
        if kind == Kind.CUSTOMER_NOTICE:
            continue  # a message waiting for its day holds nothing back either
        in_flight += 1
    return {
        "scheduled_retry": scheduled_retry,
        "side_effects_in_flight": in_flight,
        "cancel_requested": frozenset(cancel_requested),
        "revert_requested": frozenset(revert_requested),
        "lookups": lookups,
    }


def _ended_effects(rows) -> dict:
    cancel_refused, revert_refused, reverted, revert_done, lookups = {}, {}, set(), set(), {}
    for kind, status, created_at, payload, last_error in rows:
        payload = _json(payload)
        if kind == Kind.FAILURE_LOOKUP:
            lookups[payload["lookup"]] = _aware(created_at)
        elif kind == Kind.CANCEL_SUBSCRIPTION and status == "dead":
            cancel_refused[payload["subscription_id"]] = last_error[:200]
        elif kind == Kind.REVERT_UPGRADE and status == "dead":
            revert_refused[payload["subscription_id"]] = last_error[:200]
        elif kind == Kind.REVERT_UPGRADE:
            revert_done.add(payload["subscription_id"])
            reverted.update(payload["invoices"])
    return {
        "cancel_refused": cancel_refused,
        "revert_refused": revert_refused,
        "reverted_invoices": frozenset(reverted),
        "lookups": lookups,
        "reverts_done": frozenset(revert_done),
    }
