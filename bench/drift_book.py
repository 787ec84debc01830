"""The drift bench's book, in SQL: the rows every account has, those of the accounts in
dunning before the engine opens their cases, and the history added after (recovered
accounts, recent activity, a year of scans). See bench/drift.py for the whole build.
Imported by bench/drift.py after django.setup().
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.database import sql, t
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription, WebhookEvent
from dunning.models import AccountStanding, BadDebtEpisode, CaseInvoice, DriftScan, DunningCase
from dunning.policy import DeclineClass, current_policy

RESULTS = Path(__file__).resolve().parent / "results"
# The project time of the whole run: the book's timestamps and every "now" agree.
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SMALL_FACTOR = 10  # the small book keeps the accounts whose id is a multiple of this
CHANGED_EVERY = 500  # 1 account in 500 changed since the last scan
SCAN_EVERY = timedelta(minutes=10)  # the DriftScan history: a year of scans this far apart
GUARD_AGO = timedelta(minutes=5)  # "recent" activity, inside the 15-minute guard window
NAIVE_SAMPLE = 1000  # accounts not in dunning, checked one by one (drifted())
CHUNK = 10_000  # the full pass reads ids this many at a time
ENGINE_CHUNK = 250  # accounts per task of the engine's worker processes
AMOUNT = 4900  # minor units, usd: over the small-amount cap
GOAL_S = 10.0  # issue #16: the 1,000,000-account scan, on a quiet machine
GOAL_ACCOUNTS = 1_000_000
FLOOR_S = 30.0  # ... and the least it must do
GROWTH_LIMIT = 1.5  # scan(big) / scan(small): the cost follows the accounts in dunning
QUIET_CORES = 0.25  # others' CPU use during a scan (cores) under which the machine is quiet


def log(message: str, started: float | None = None) -> None:
    suffix = f" ({time.perf_counter() - started:.1f} s)" if started is not None else ""
    print(message + suffix, flush=True)


def base_rows(n: int, step: int) -> tuple[dict, dict]:
    """Every account's rows and the failed invoices of those in dunning: the SQL parameters
    and the build timings."""
    timings = {}
    p = {
        "n": n,
        "step": step,
        "now": NOW,
        "small": SMALL_FACTOR,
        "changed": CHANGED_EVERY,
        "amount": AMOUNT,
        "soft": [0] + [d.days for d in current_policy().retries.schedules[DeclineClass.SOFT]],
        "guard_ago": GUARD_AGO,
    }
    sql("SET synchronous_commit = off")
    sql("SET maintenance_work_mem = '256MB'")

    def step_(label: str, statement: str) -> None:
        started = time.perf_counter()
        rows = sql(statement, p)
        timings[label] = round(time.perf_counter() - started, 2)
        log(f"  {label}: {rows:,} rows", started)

    step_(
        "accounts",
        f"""
        INSERT INTO {t(Account)} (id, stripe_customer_id, email, default_payment_method,
          customer_version, customer_version_event_id, payment_method_updated_at,
          card_expiring_at, created_at)
        SELECT a, 'cus_bd' || lpad(a::text, 7, '0'), 'billing+' || a || '@example.com',
          'pm_bd' || a, %(now)s - interval '400 days', 'evt_bd' || a || '_cust',
          %(now)s - interval '400 days', NULL, %(now)s - interval '400 days'
        FROM generate_series(1, %(n)s) a""",
    )
    sql(f"SELECT setval(pg_get_serial_sequence('{Account._meta.db_table}', 'id'), %(n)s)", p)
    step_(
        "subscriptions",
        f"""
        INSERT INTO {t(Subscription)} (stripe_subscription_id, account_id, status,
          canceled_at, price_ids, version, version_event_id)
        SELECT 'sub_bd' || a, a, CASE WHEN a %% %(step)s = 0 THEN 'past_due' ELSE 'active' END,
          NULL, '["price_pro_monthly"]', %(now)s - interval '35 days', 'evt_bd' || a || '_sub'
        FROM generate_series(1, %(n)s) a""",
    )
    # Invoice ids are 2a (paid, every account) and 2a + 1 (in dunning, or recovered).
    step_(
        "paid invoices",
        f"""
        INSERT INTO {t(Invoice)} (id, stripe_invoice_id, account_id, stripe_subscription_id,
          status, amount_due, amount_paid, amount_remaining, currency, billing_reason,
          attempt_count, paid_out_of_band, stripe_created, finalized_at, paid_at, voided_at,
          marked_uncollectible_at, next_payment_attempt, payment_failed_at, version,
          version_rank, version_event_id)
        SELECT 2 * a, 'in_bd' || a || '_p', a, 'sub_bd' || a, 'paid', %(amount)s, %(amount)s,
          0, 'usd', 'subscription_cycle', 1, false, %(now)s - interval '35 days',
          %(now)s - interval '35 days', %(now)s - interval '35 days' + interval '1 hour',
          NULL, NULL, NULL, NULL, %(now)s - interval '35 days' + interval '1 hour', 3,
          'evt_bd' || a || '_paid'
        FROM generate_series(1, %(n)s) a""",
    )
    step_(
        "paid charges",
        f"""
        INSERT INTO {t(PaymentAttempt)} (attempt_key, account_id, invoice_id, stripe_invoice_id,
          stripe_charge_id, stripe_payment_intent_id, payment_method, outcome, amount, currency,
          decline_code, failure_code, advice_code, network_advice_code, network_decline_code,
          attempted_at)
        SELECT 'ch_bd' || a || '_p', a, 2 * a, 'in_bd' || a || '_p', 'ch_bd' || a || '_p',
          'pi_bd' || a || '_p', 'pm_bd' || a, 'succeeded', %(amount)s, 'usd', '', '', '', '',
          '', %(now)s - interval '35 days' + interval '1 hour'
        FROM generate_series(1, %(n)s) a""",
    )
    step_(
        "webhook events",
        f"""
        INSERT INTO {t(WebhookEvent)} (stripe_event_id, type, stripe_created, livemode,
          raw_body, status, attempts, last_error, next_attempt_at, received_at, processed_at,
          account_id)
        SELECT 'evt_bd' || a || '_paid', 'invoice.paid', at, false,
          '{{"id":"evt_bd' || a || '_paid","type":"invoice.paid","data":{{"object":'
          || '{{"id":"in_bd' || a || '_p","customer":"cus_bd' || lpad(a::text, 7, '0')
          || '","status":"paid"}}}}}}', 'processed', 1, '', NULL, at, at, a
        FROM generate_series(1, %(n)s) a,
          LATERAL (SELECT %(now)s - interval '35 days' + interval '1 hour' AS at) x""",
    )
    # The accounts in dunning and how far in: five kinds by j = a / step.
    sql(
        """
        CREATE TABLE bench_drift_dunning AS
        SELECT a AS account, j, s,
          CASE WHEN s < 13 OR s = 19 THEN 'insufficient_funds' ELSE 'expired_card' END
            AS decline_code,
          CASE WHEN s < 8 THEN j %% 2            -- notice, retrying
               WHEN s < 13 THEN 8 + j %% 5       -- premium_restricted, retrying
               WHEN s < 16 THEN 2 + j %% 4       -- notice, awaiting the customer
               WHEN s < 19 THEN 15 + j %% 11     -- read_only, awaiting the customer
               ELSE 31 + j %% 10 END AS days,    -- suspended, escalated (bad debt)
          3 + j %% 5 AS hours
        FROM (SELECT a, a / %(step)s AS j, (a / %(step)s) %% 20 AS s
              FROM generate_series(%(step)s, %(n)s, %(step)s) a) x""",
        p,
    )
    sql(
        """
        ALTER TABLE bench_drift_dunning
          ADD COLUMN first_fail timestamptz, ADD COLUMN attempts int;
        UPDATE bench_drift_dunning SET
          first_fail = %(now)s - days * interval '1 day' - hours * interval '1 hour',
          attempts = CASE WHEN decline_code = 'expired_card' THEN 1
            ELSE (SELECT count(*) FROM unnest(%(soft)s::int[]) o WHERE o <= days) END""",
        p,
    )
    step_(
        "dunning invoices",
        f"""
        INSERT INTO {t(Invoice)} (id, stripe_invoice_id, account_id, stripe_subscription_id,
          status, amount_due, amount_paid, amount_remaining, currency, billing_reason,
          attempt_count, paid_out_of_band, stripe_created, finalized_at, paid_at, voided_at,
          marked_uncollectible_at, next_payment_attempt, payment_failed_at, version,
          version_rank, version_event_id)
        SELECT 2 * d.account + 1, 'in_bd' || d.account || '_d', d.account,
          'sub_bd' || d.account, 'open', %(amount)s, 0, %(amount)s, 'usd',
          'subscription_cycle', d.attempts, false, d.first_fail - interval '1 hour',
          d.first_fail - interval '1 hour', NULL, NULL, NULL, NULL, d.first_fail,
          d.first_fail + (d.attempts - 1) * interval '1 day', 2,
          'evt_bd' || d.account || '_failed'
        FROM bench_drift_dunning d ORDER BY d.account""",
    )
    step_(
        "failed charges",
        f"""
        INSERT INTO {t(PaymentAttempt)} (attempt_key, account_id, invoice_id, stripe_invoice_id,
          stripe_charge_id, stripe_payment_intent_id, payment_method, outcome, amount, currency,
          decline_code, failure_code, advice_code, network_advice_code, network_decline_code,
          attempted_at)
        SELECT 'ch_bd' || d.account || '_f' || o.k, d.account, 2 * d.account + 1,
          'in_bd' || d.account || '_d', 'ch_bd' || d.account || '_f' || o.k,
          'pi_bd' || d.account || '_d', 'pm_bd' || d.account, 'failed', %(amount)s, 'usd',
          d.decline_code, 'card_declined', '', '', '', d.first_fail + o.off * interval '1 day'
        FROM bench_drift_dunning d,
          LATERAL unnest(%(soft)s::int[]) WITH ORDINALITY AS o(off, k)
        WHERE o.k <= d.attempts ORDER BY d.account, o.k""",
    )
    return p, timings


def history_rows(p: dict, step: int, timings: dict) -> None:
    """After the engine: recovered accounts' history, recent activity, a year of scans."""
    started = time.perf_counter()
    recovered = f"""(a %% 10 = 3 OR a %% 100 = %(small)s) AND a %% {step} <> 0"""
    sql(
        f"""
        INSERT INTO {t(Invoice)} (id, stripe_invoice_id, account_id, stripe_subscription_id,
          status, amount_due, amount_paid, amount_remaining, currency, billing_reason,
          attempt_count, paid_out_of_band, stripe_created, finalized_at, paid_at, voided_at,
          marked_uncollectible_at, next_payment_attempt, payment_failed_at, version,
          version_rank, version_event_id)
        SELECT 2 * a + 1, 'in_bd' || a || '_r', a, 'sub_bd' || a, 'paid', %(amount)s,
          %(amount)s, 0, 'usd', 'subscription_cycle', 2, false,
          %(now)s - interval '221 days', %(now)s - interval '221 days',
          %(now)s - interval '200 days', NULL, NULL, NULL, %(now)s - interval '220 days',
          %(now)s - interval '200 days', 3, 'evt_bd' || a || '_rpaid'
        FROM generate_series(1, %(n)s) a WHERE {recovered};
        INSERT INTO {t(PaymentAttempt)} (attempt_key, account_id, invoice_id, stripe_invoice_id,
          stripe_charge_id, stripe_payment_intent_id, payment_method, outcome, amount, currency,
          decline_code, failure_code, advice_code, network_advice_code, network_decline_code,
          attempted_at)
        SELECT 'ch_bd' || a || '_r' || k, a, 2 * a + 1, 'in_bd' || a || '_r',
          'ch_bd' || a || '_r' || k, 'pi_bd' || a || '_r', 'pm_bd' || a,
          CASE k WHEN 1 THEN 'failed' ELSE 'succeeded' END, %(amount)s, 'usd',
          CASE k WHEN 1 THEN 'insufficient_funds' ELSE '' END, '', '', '', '',
          %(now)s - interval '200 days' - (2 - k) * interval '20 days'
        FROM generate_series(1, %(n)s) a, generate_series(1, 2) k WHERE {recovered};
        INSERT INTO {t(DunningCase)} (account_id, state, resolution, level, decline_class,
          earliest_unpaid_at, amount_overdue, next_review_at, next_retry_at, paused_until,
          pause_reason, grace_until, grace_reason, opened_at, resolved_at, policy_version,
          shadow, last_decision_id)
        SELECT a, 'resolved', 'paid', 'none', 'soft', %(now)s - interval '221 days', '{{}}',
          NULL, NULL, NULL, '', NULL, '', %(now)s - interval '220 days',
          %(now)s - interval '200 days', '2026-11-v2', '{{}}', NULL
        FROM generate_series(1, %(n)s) a WHERE {recovered};
        INSERT INTO {t(CaseInvoice)} (case_id, invoice_id)
        SELECT c.id, 2 * c.account_id + 1 FROM {t(DunningCase)} c WHERE c.state = 'resolved';
        INSERT INTO {t(AccountStanding)} (account_id, requested, requested_at, acknowledged,
          acknowledged_at)
        SELECT a, 'good', %(now)s - interval '200 days', 'good', %(now)s - interval '200 days'
        FROM generate_series(1, %(n)s) a WHERE {recovered};
        INSERT INTO {t(BadDebtEpisode)} (account_id, case_id, reason, products, amount,
          entered_at, exited_at, exit_reason)
        SELECT c.account_id, c.id, 'ladder_suspended', ('["sub_bd' || c.account_id || '"]')::jsonb,
          '{{"usd": {AMOUNT}}}', %(now)s - interval '205 days', %(now)s - interval '200 days',
          'paid'
        FROM {t(DunningCase)} c WHERE c.state = 'resolved' AND c.account_id %% 100 = 3""",
        p,
    )
    timings["recovered history"] = round(time.perf_counter() - started, 2)
    log("  recovered accounts' history", started)

    # Changed since the last scan (1 in CHANGED_EVERY, none in dunning, all in the small
    # book), and the guarded tenth of the drift: events 5 minutes before NOW.
    sql(
        f"""
        INSERT INTO {t(WebhookEvent)} (stripe_event_id, type, stripe_created, livemode,
          raw_body, status, attempts, last_error, next_attempt_at, received_at, processed_at,
          account_id)
        SELECT 'evt_bd' || a || '_' || type, type, at, false,
          '{{"id":"evt_bd' || a || '_' || type || '","type":"' || type || '"}}',
          'processed', 1, '', NULL, at, at, a
        FROM (
          SELECT a, 'customer.updated' AS type FROM generate_series(1, %(n)s) a
            WHERE a %% %(changed)s = 2 * %(small)s
          UNION ALL
          SELECT account, 'invoice.updated' FROM bench_drift_dunning WHERE j %% 1000 = 9
        ) x, LATERAL (SELECT %(now)s - %(guard_ago)s AS at) y""",
        p,
    )
    # A year of drift scans every SCAN_EVERY; the last started SCAN_EVERY before NOW.
    sql(
        f"""
        INSERT INTO {t(DriftScan)} (started_at, finished_at, candidates, drifted, remediated,
          deferred)
        SELECT at, at + interval '40 seconds', 0, 0, 0, 0
        FROM generate_series(%(now)s - interval '365 days', %(now)s - %(every)s, %(every)s) at
        """,
        {**p, "every": SCAN_EVERY},
    )
