"""Lock an account and read its snapshot in eight plain SQL statements.

The recompute is the hot path, and building ORM querysets cost more than running them
(about 0.7 ms of Python per query against 0.1 ms in PostgreSQL), so these statements are
written once, from the models' own table names, and run as they are. They are plain SQL
that PostgreSQL and SQLite (the embedded default) both run; the row lock is PostgreSQL's.
"""

import json
from datetime import UTC, datetime, timedelta

from django.db import connection

from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from dunning import rollout
from dunning.models import (
    OPEN_STATES,
    AccountStanding,
    BadDebtEpisode,
    CaseInvoice,
    DunningCase,
    OutboxItem,
    RolloutGate,
)
from dunning.snapshot import (
    DEFAULT_STANDING,
    AttemptView,
    CaseView,
    InvoiceView,
    ScheduledRetry,
    Snapshot,
)
from entitlements.models import Restriction


def _t(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


OPEN = ", ".join(f"'{state}'" for state in OPEN_STATES)

ACCOUNT = f"""
SELECT a.id, a.stripe_customer_id, a.payment_method_updated_at,
  (SELECT s.requested FROM {_t(AccountStanding)} s WHERE s.account_id = a.id),
  (SELECT s.acknowledged FROM {_t(AccountStanding)} s WHERE s.account_id = a.id),
  (SELECT e.reason FROM {_t(BadDebtEpisode)} e
     WHERE e.account_id = a.id AND e.exited_at IS NULL),
  (SELECT COUNT(*) FROM {_t(Invoice)} i WHERE i.account_id = a.id AND i.status = 'paid'),
  (SELECT COUNT(*) FROM {_t(DunningCase)} c WHERE c.account_id = a.id AND c.opened_at > %s),
  (SELECT g.stage FROM {_t(RolloutGate)} g WHERE g.id = 1),
  (SELECT g.kill_switch FROM {_t(RolloutGate)} g WHERE g.id = 1),
  (SELECT g.allowlist FROM {_t(RolloutGate)} g WHERE g.id = 1)
FROM {_t(Account)} a WHERE a.id = %s"""

CASE_COLUMNS = """c.id, c.state, c.resolution, c.level, c.decline_class, c.earliest_unpaid_at,
  c.amount_overdue, c.next_review_at, c.next_retry_at, c.paused_until, c.pause_reason,
  c.grace_until, c.grace_reason, c.opened_at, c.shadow"""

OPEN_CASE = f"""
SELECT {CASE_COLUMNS} FROM {_t(DunningCase)} c
WHERE c.account_id = %s AND c.state IN ({OPEN})"""

CASE_OF_INVOICE = f"""
SELECT {CASE_COLUMNS} FROM {_t(DunningCase)} c
JOIN {_t(CaseInvoice)} ci ON ci.case_id = c.id
JOIN {_t(Invoice)} i ON i.id = ci.invoice_id
WHERE c.account_id = %s AND i.stripe_invoice_id = %s"""

INVOICES = f"""
SELECT i.id, i.stripe_invoice_id, i.status, i.amount_remaining, i.currency, i.billing_reason,
  i.attempt_count, i.payment_failed_at, i.paid_out_of_band, i.finalized_at, i.stripe_created,
  i.stripe_subscription_id, ci.case_id
FROM {_t(Invoice)} i LEFT JOIN {_t(CaseInvoice)} ci ON ci.invoice_id = i.id
WHERE i.account_id = %s AND (
  i.status = 'uncollectible'
  OR (i.status = 'open' AND (
    i.attempt_count > 0 OR i.payment_failed_at IS NOT NULL
    OR EXISTS (SELECT 1 FROM {_t(PaymentAttempt)} p
               WHERE p.invoice_id = i.id AND p.outcome = 'failed')))
  OR ci.case_id = %s
  OR i.stripe_invoice_id = %s)
ORDER BY i.id"""

ATTEMPTS = f"""
SELECT p.invoice_id, p.outcome, p.decline_code, p.failure_code, p.advice_code,
  p.network_advice_code, p.network_decline_code, p.payment_method, p.attempted_at
FROM {_t(PaymentAttempt)} p WHERE p.invoice_id IN ({{ids}})
ORDER BY p.attempted_at, p.id"""

PENDING_OUTBOX = f"""
SELECT o.id, o.kind, o.payload, o.next_attempt_at, o.claimed_until
FROM {_t(OutboxItem)} o WHERE o.account_id = %s AND o.status = 'pending'"""

CARD_ATTEMPTS = f"""
SELECT p.payment_method, COUNT(*) FROM {_t(PaymentAttempt)} p
WHERE p.account_id = %s AND p.attempted_at > %s AND p.payment_method <> ''
GROUP BY p.payment_method"""

SUBSCRIPTIONS = f"""
SELECT s.stripe_subscription_id, s.status FROM {_t(Subscription)} s WHERE s.account_id = %s"""

RESTRICTIONS = f"""
SELECT r.code, r.level FROM {_t(Restriction)} r WHERE r.account_id = %s"""


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC datetimes; PostgreSQL aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else value


def _param(value: datetime) -> object:
    return connection.ops.adapt_datetimefield_value(value)


def _case(row) -> CaseView:
    return CaseView(
        pk=row[0],
        state=row[1],
        resolution=row[2],
        level=row[3],
        decline_class=row[4],
        earliest_unpaid_at=_aware(row[5]),
        amount_overdue=_json(row[6]),
        next_review_at=_aware(row[7]),
        next_retry_at=_aware(row[8]),
        paused_until=_aware(row[9]),
        pause_reason=row[10],
        grace_until=_aware(row[11]),
        grace_reason=row[12],
        opened_at=_aware(row[13]),
        shadow=_json(row[14]),
    )


def lock_and_read(
    *,
    account_id: int,
    now: datetime,
    card_window: timedelta,
    memory: timedelta,
    invoice_hint: str = "",
    lock: bool = True,
) -> tuple[Account, Snapshot]:
    """Lock the account row (FOR UPDATE on PostgreSQL) and read its snapshot. Call inside
    a transaction. `lock=False` reads without the lock (the drift detector's preview).
    Raises Account.DoesNotExist for an unknown account."""
    row_lock = connection.features.has_select_for_update_of and lock
    lock_sql = " FOR UPDATE OF a" if row_lock else ""
    with connection.cursor() as cursor:
        cursor.execute(ACCOUNT + lock_sql, [_param(now - memory), account_id])
        row = cursor.fetchone()
        if row is None:
            raise Account.DoesNotExist(f"no account {account_id}")
        (_, customer_id, pm_updated_at, requested, acknowledged, episode, paid, cases) = row[:8]
        stage, kill_switch, allowlist = row[8:]
        stage = stage or rollout.default_stage()
        account = Account(
            pk=account_id,
            stripe_customer_id=customer_id,
            payment_method_updated_at=_aware(pm_updated_at),
        )

        cursor.execute(OPEN_CASE, [account_id])
        found = cursor.fetchone()
        if found is None and invoice_hint:
            # A late event about a resolved case's invoice refines that case's record.
            cursor.execute(CASE_OF_INVOICE, [account_id, invoice_hint])
            found = cursor.fetchone()
        case = _case(found) if found else None

        cursor.execute(INVOICES, [account_id, case.pk if case else -1, invoice_hint or None])
        invoices = tuple(
            InvoiceView(
                pk=r[0],
                stripe_invoice_id=r[1],
                status=r[2],
                amount_remaining=r[3],
                currency=r[4],
                billing_reason=r[5],
                attempt_count=r[6],
                payment_failed=r[7] is not None,
                paid_out_of_band=bool(r[8]),
                opened_at=_aware(r[9] or r[10]),
                subscription_id=r[11],
                case_id=r[12],
            )
            for r in cursor.fetchall()
        )

        attempts: tuple[AttemptView, ...] = ()
        if invoices:
            ids = [invoice.pk for invoice in invoices]
            cursor.execute(ATTEMPTS.format(ids=", ".join(["%s"] * len(ids))), ids)
            attempts = tuple(
                AttemptView(
                    invoice_pk=r[0],
                    outcome=r[1],
                    decline_code=r[2] or r[3],
                    advice_code=r[4],
                    network_advice_code=r[5],
                    network_decline_code=r[6],
                    payment_method=r[7],
                    attempted_at=_aware(r[8]),
                )
                for r in cursor.fetchall()
            )

        cursor.execute(PENDING_OUTBOX, [account_id])
        scheduled_retry, in_flight, cancel_requested = None, 0, set()
        for pk, kind, payload, next_attempt_at, claimed_until in cursor.fetchall():
            payload = _json(payload)
            running = claimed_until is not None and _aware(claimed_until) > now
            if kind == OutboxItem.Kind.PAYMENT_RETRY:
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
            if kind == OutboxItem.Kind.CANCEL_SUBSCRIPTION:
                cancel_requested.add(payload["subscription_id"])
            in_flight += 1

        cursor.execute(CARD_ATTEMPTS, [account_id, _param(now - card_window)])
        card_attempts = dict(cursor.fetchall())
        cursor.execute(SUBSCRIPTIONS, [account_id])
        subscription_status = dict(cursor.fetchall())
        cursor.execute(RESTRICTIONS, [account_id])
        restrictions = dict(cursor.fetchall())

    earlier_cases = cases - (1 if case is not None and case.opened_at > now - memory else 0)
    return account, Snapshot(
        account_id=account_id,
        invoices=invoices,
        attempts=attempts,
        subscription_status=subscription_status,
        case=case,
        restrictions=restrictions,
        standing_requested=requested or DEFAULT_STANDING,
        standing_acknowledged=acknowledged or DEFAULT_STANDING,
        side_effects_in_flight=in_flight,
        payment_method_updated_at=account.payment_method_updated_at,
        scheduled_retry=scheduled_retry,
        card_attempts=card_attempts,
        paid_invoices=paid,
        recent_cases=earlier_cases,
        bad_debt=episode,
        cancel_requested=frozenset(cancel_requested),
        enforced=rollout.in_gate(
            stripe_customer_id=customer_id,
            stage=stage,
            kill_switch=bool(kill_switch),
            allowlist=_json(allowlist) if allowlist else [],
        ),
        rollout_stage=stage,
    )
