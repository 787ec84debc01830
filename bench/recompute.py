#!/usr/bin/env python
"""Benchmark: an empty-diff dunning recompute vs a bare SQL lock-and-update, on PostgreSQL.

    .venv/bin/python bench/recompute.py [--accounts N] [--rounds R] [--database NAME]

1. Its own database `bench_retries_recompute` (created, migrated, emptied; `--database`
   names another, so two runs side by side do not empty each other's), the rollout
   gate at stage 100 (enforcement for every account: the path production runs, not the
   fresh install's shadow mode).
2. N accounts with a short history (one renewal in dunning, delivered as Stripe events
   through `apply_event`) and N with a long one (the same, after 199 weekly invoices paid
   on the first attempt, each with its charge). The renewal's charge failed two hours ago
   with a soft decline: the case is `retrying` at `notice` with a retry planned. The
   outbox is drained and the tables analysed: every account has converged, so each
   measured recompute must come back with an empty diff (checked on every call).
3. Interleaved rounds (phase order alternating, one warm-up round dropped):
     baseline   per account, one transaction: SELECT id ... FOR UPDATE, then
                UPDATE ... SET email = email, as plain SQL on a cursor
     short      `handle(NINJAPANEL_BUTTON)` on the short accounts
     long       the same on the long accounts
4. Prints per phase the mean and p50/p99 wall time, CPU per call (this process and its
   PostgreSQL backend), statements per call, the cost ratio against the baseline (median
   of the rounds, and their spread), the CPU ratio, and the verdict against #16's goal
   (<= 2x) with the floor (<= 2.5x) printed apart; writes bench/results/recompute.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common, processes

# Read before Django is set up (the database is chosen then), so not through argparse.
DB_NAME = "bench_retries_recompute"
for _n, _arg in enumerate(sys.argv):
    if _arg == "--database" and _n + 1 < len(sys.argv):
        DB_NAME = sys.argv[_n + 1]
GOAL, FLOOR = 2.0, 2.5
PAID_INVOICES = 199
DAY, WEEK = 86400, 7 * 86400

common.django_bench(DB_NAME, CELERY_BROKER_URL="")

from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.database import prepare_database  # noqa: E402
from billing_events.models import Account, Invoice, PaymentAttempt, WebhookEvent  # noqa: E402
from billing_events.scenarios import StripeCustomer  # noqa: E402
from dunning import outbox, rollout  # noqa: E402
from dunning.engine import handle  # noqa: E402
from dunning.intake.processing import apply_event  # noqa: E402
from dunning.models import DunningCase  # noqa: E402
from dunning.triggers import Trigger, TriggerKind  # noqa: E402

TABLE = connection.ops.quote_name(Account._meta.db_table)
LOCK = f"SELECT id FROM {TABLE} WHERE id = %s FOR UPDATE"
TOUCH = f"UPDATE {TABLE} SET email = email WHERE id = %s"


def deliver(events: list[dict]) -> None:
    for event in events:
        with transaction.atomic():
            apply_event(WebhookEvent(stripe_event_id=event["id"], payload=event))


def paid_history(account: Account, tag: str, start: int) -> None:
    """199 weekly invoices paid on the first attempt, each with its successful charge, as
    the mirror stores them (written directly: delivering 600 events per account is slow)."""
    invoices = []
    for n in range(PAID_INVOICES):
        at = datetime.fromtimestamp(start - (PAID_INVOICES - n) * WEEK, tz=UTC)
        invoices.append(
            Invoice(
                stripe_invoice_id=f"in_{tag}_{n:03d}",
                account=account,
                stripe_subscription_id=f"sub_{tag}",
                status=Invoice.Status.PAID,
                amount_due=2000,
                amount_paid=2000,
                currency="usd",
                billing_reason="subscription_cycle",
                attempt_count=1,
                stripe_created=at,
                finalized_at=at,
                paid_at=at + timedelta(hours=1),
                version=at + timedelta(hours=1),
                version_event_id=f"evt_{tag}_{n:03d}",
            )
        )
    Invoice.objects.bulk_create(invoices)
    PaymentAttempt.objects.bulk_create(
        PaymentAttempt(
            attempt_key=f"ch_{tag}_{n:03d}",
            account=account,
            invoice=invoice,
            stripe_invoice_id=invoice.stripe_invoice_id,
            stripe_charge_id=f"ch_{tag}_{n:03d}",
            outcome="succeeded",
            amount=2000,
            currency="usd",
            attempted_at=invoice.paid_at,
        )
        for n, invoice in enumerate(invoices)
    )


def build_account(kind: str, k: int, run_at: int) -> int:
    tag = f"bench_{kind}{k:05d}"
    c = StripeCustomer(id=f"cus_{tag}", subscription=f"sub_{tag}", t=run_at - 3 * DAY)
    c.subscription_event("customer.subscription.created")
    deliver(c.events)
    account = Account.objects.get(stripe_customer_id=c.id)
    if kind == "l":
        paid_history(account, tag, run_at - 2 * DAY)
    c.events.clear()
    c.t = run_at - 2 * DAY
    c.invoice_event("invoice.finalized")
    c.t = run_at - 2 * 3600
    c.charge_event("charge.failed", f"ch_{tag}_fail", decline_code="insufficient_funds")
    c.invoice_event("invoice.payment_failed", attempt_count=1)
    deliver(c.events)
    return account.pk


def build(n: int) -> dict[str, list[int]]:
    started = time.perf_counter()
    rollout.set_gate(stage="100", kill_switch=False, allowlist=[], actor="bench", reason="bench")
    run_at = int(timezone.now().timestamp())
    ids = {
        kind: [build_account(kind[0], k, run_at) for k in range(n)] for kind in ("short", "long")
    }
    drained = outbox.drain(max_rounds=100)
    cases = DunningCase.objects.values_list("state", "level").distinct()
    if list(cases) != [("retrying", "notice")]:
        raise common.BenchError(f"accounts not all retrying at notice: {list(cases)}")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    took = time.perf_counter() - started
    print(f"built {n} short + {n} long accounts in {took:.0f} s ({drained} outbox items run)")
    return ids


def baseline(account_id: int) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(LOCK, [account_id])
        cursor.fetchone()
        cursor.execute(TOUCH, [account_id])


def recompute(account_id: int) -> None:
    outcome = handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id, source="bench"))
    if outcome.changes:
        raise common.BenchError(f"account {account_id}: not an empty diff: {outcome.changes}")


def run_phase(fn, ids: list[int], backend: int) -> dict:
    walls = []
    cpu, pg_cpu = time.process_time(), processes.process_cpu_s(backend)
    for pk in ids:
        started = time.perf_counter_ns()
        fn(pk)
        walls.append(time.perf_counter_ns() - started)
    return {
        "walls": walls,
        "cpu": time.process_time() - cpu,
        "pg_cpu": processes.process_cpu_s(backend) - pg_cpu,
    }


def statements(fn, account_id: int) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        fn(account_id)
    return [q["sql"] for q in captured.captured_queries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--accounts", type=int, default=80, help="accounts per history kind")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (plus a warm-up)")
    parser.add_argument("--database", default=DB_NAME, help="the bench's own database")
    args = parser.parse_args()
    prepare_database(DB_NAME, common.ADMIN_DSN)
    ids = build(args.accounts)
    phases = {
        "baseline": (baseline, ids["short"] + ids["long"]),
        "short": (recompute, ids["short"]),
        "long": (recompute, ids["long"]),
    }
    sql = {name: statements(fn, pks[-1]) for name, (fn, pks) in phases.items()}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    rounds: dict[str, list[dict]] = {name: [] for name in phases}
    loads, started = [], time.perf_counter()
    for round_no in range(args.rounds + 1):
        order = list(phases) if round_no % 2 == 0 else list(phases)[::-1]
        for name in order:
            fn, pks = phases[name]
            phase = run_phase(fn, pks, backend)
            if round_no:  # the first round warms caches, plans and the connection up
                rounds[name].append(phase)
        loads.append(processes.load_average())
    measured = time.perf_counter() - started

    rows = {}
    for name, measured_rounds in rounds.items():
        walls = sorted(w for p in measured_rounds for w in p["walls"])
        calls = len(walls)
        rows[name] = {
            "calls": calls,
            "mean_us": statistics.fmean(walls) / 1000,
            "p50_us": walls[calls // 2] / 1000,
            "p99_us": walls[min(calls - 1, round(0.99 * (calls - 1)))] / 1000,
            "cpu_us": sum(p["cpu"] for p in measured_rounds) / calls * 1e6,
            "pg_cpu_us": sum(p["pg_cpu"] for p in measured_rounds) / calls * 1e6,
            "statements": len(sql[name]),
            "ratio_by_round": [
                statistics.fmean(p["walls"]) / statistics.fmean(b["walls"])
                for p, b in zip(measured_rounds, rounds["baseline"], strict=True)
            ],
        }
    base = rows["baseline"]
    for row in rows.values():
        row["ratio"] = common.median(row["ratio_by_round"])
        row["cpu_ratio"] = (row["cpu_us"] + row["pg_cpu_us"]) / (base["cpu_us"] + base["pg_cpu_us"])

    print(
        f"\nPostgreSQL {connection.pg_version // 10000}, rollout stage 100 (enforcement), "
        f"{args.accounts} short + {args.accounts} long accounts ({PAID_INVOICES + 1} invoices "
        f"each), {args.rounds} rounds + 1 warm-up, {measured:.0f} s measured, load average "
        f"during the rounds {min(loads):.2f}-{max(loads):.2f}\n"
    )
    print(
        f"{'':10}{'per s':>7}{'mean µs':>9}{'p50 µs':>8}{'p99 µs':>8}{'py cpu':>8}{'pg cpu':>8}"
        f"{'stmts':>6}{'ratio':>8}{'by round':>14}{'cpu ratio':>11}"
    )
    for name, row in rows.items():
        spread = row["ratio_by_round"]
        print(
            f"{name:10}{1e6 / row['mean_us']:7.0f}{row['mean_us']:9.0f}{row['p50_us']:8.0f}"
            f"{row['p99_us']:8.0f}{row['cpu_us']:8.0f}{row['pg_cpu_us']:8.0f}"
            f"{row['statements']:6d}{row['ratio']:7.2f}x{min(spread):7.2f}-{max(spread):.2f}x"
            f"{row['cpu_ratio']:10.2f}x"
        )
    print(
        "  ratio: wall time per call / the baseline's, median of the rounds (spread: min-max);"
        "\n  py cpu, pg cpu: CPU µs per call of this process and of its PostgreSQL backend;"
        "\n  cpu ratio: their sum / the baseline's\n"
    )
    verdicts = {}
    for name in ("short", "long"):
        verdicts[name] = common.verdict(rows[name]["ratio"], GOAL, FLOOR, higher_is_better=False)
        print(
            f"#16 empty-diff recompute, {name} history: {rows[name]['ratio']:.2f}x "
            f"(CPU {rows[name]['cpu_ratio']:.2f}x): {verdicts[name]}"
        )
    print("\nstatements per call: " + "; ".join(f"{n} {len(s)}" for n, s in sql.items()))

    out = common.ROOT / "bench" / "results" / "recompute.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "recompute",
        "database": DB_NAME,
        "rollout_stage": "100",
        "accounts_per_kind": args.accounts,
        "rounds": args.rounds,
        "goal": GOAL,
        "floor": FLOOR,
        "verdicts": verdicts,
        "results": rows,
        "sql": sql,
        "load_average": loads,
        "measured_seconds": round(measured, 1),
        "at": timezone.now().isoformat(),
    }
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
