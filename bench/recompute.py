#!/usr/bin/env python
"""Benchmark: one dunning recompute vs. a one-lock-one-UPDATE baseline, on PostgreSQL.

    .venv/bin/python bench/recompute.py [--accounts N] [--rounds R] [--profile]

What it does, end to end:
  1. creates the PostgreSQL database `dunning_bench_recompute` if missing (and again if
     its schema no longer matches the models, e.g. a migration edited in place),
     migrates it and empties it (`flush`);
  2. builds N accounts with a short history (one invoice in dunning) and N with a long
     one (199 weekly invoices paid on the first attempt, then one in dunning). The
     invoice in dunning was finalized two days ago and its charge failed two hours ago
     with a soft decline, so the case is `retrying` at `notice` with its first retry
     planned for tomorrow (a pending outbox row). Every short account, and the first
     long one, get their whole Stripe history delivered event by event through
     `dunning.intake.processing.apply_event` (as tests/test_engine_properties.py does).
     The other long accounts get a row-for-row copy of the first one's 199 paid invoices,
     their charges and the subscription (ids rewritten), then their dunning events
     through `apply_event`. Every store of every account (mirror and dunning, own ids
     normalised) is asserted equal to its first account's;
  3. drains the outbox and VACUUM ANALYZEs; every account has converged: an empty-diff
     recompute writes nothing (checked with CaptureQueriesContext on one account of each
     kind, and every measured recompute below must return an empty diff);
  4. measures, interleaved in rounds whose phase order alternates (ABBA), after one
     warm-up round:
       baseline     per account, in one transaction: SELECT ... FOR UPDATE + UPDATE
       short, long  `dunning.engine.handle(NINJAPANEL_BUTTON)`, empty diff
       +diff        on a quarter of the accounts, `handle(TIME_PASSED)` with the clock
                    just past the case's next_review_at (as beat recomputes it then): the
                    ladder moves notice -> premium_restricted (case, restrictions,
                    standing, decision, outbox row). The after-commit
                    dispatcher kick is a no-op here (in production it is one broker
                    publish; eager Celery would run the side effect inline). Each account
                    is put back untimed (clock back, recompute; the phase's standing rows
                    are drained after it);
  5. prints the table, with the CPU used per call by this process and by its PostgreSQL
     backend, and the SQL statements per call; writes bench/results/recompute.json.
     With --profile, also splits a long recompute's time into cursor.execute and the
     rest, and prints a cProfile of it.

Cost ratio = mean wall time of one recompute / that of one baseline transaction; the
target: an empty-diff recompute costs at most 4x the baseline. On a busy machine the CPU
ratio (both processes' CPU per call, over the baseline's) is the steadier figure.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
# Run as `python bench/recompute.py`, sys.path[0] is bench/; make the repo root importable
# instead (and do not let bench/*.py shadow top-level module names).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DB_NAME = "dunning_bench_recompute"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = ROOT / "bench" / "results"
TARGET_RATIO = 4.0

os.environ.update(
    DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    DJANGO_SETTINGS_MODULE="config.settings",
    DJANGO_DEBUG="false",
    CELERY_BROKER_URL="",  # no broker: tasks run in-process (the default)
    DUNNING_TEST_CLOCK="false",  # the test clock costs a query per recompute
    ACCOUNT_MANAGEMENT_URL="",  # outbox side effects succeed without network I/O
    STRIPE_API_KEY="",  # no real Stripe calls, whatever the environment says
    LOG_LEVEL="WARNING",  # not the eager Celery task log lines; the measured path logs nothing
    SENTRY_DSN="",
)

import django  # noqa: E402

django.setup()
# Eager Celery has kombu say once that no broker host was given: known, and harmless here.
logging.getLogger("kombu.connection").setLevel(logging.ERROR)

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import F  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.database import BenchError, prepare_database  # noqa: E402
from billing_events import samples  # noqa: E402
from billing_events.models import (  # noqa: E402
    Account,
    Invoice,
    PaymentAttempt,
    Subscription,
    WebhookEvent,
)
from billing_events.scenarios import StripeCustomer  # noqa: E402
from core import clock  # noqa: E402
from dunning import outbox, outbox_items  # noqa: E402
from dunning.diff import Outcome  # noqa: E402
from dunning.engine import handle  # noqa: E402
from dunning.intake.processing import apply_event  # noqa: E402
from dunning.models import OPEN_STATES, AccountStanding, DunningCase, OutboxItem  # noqa: E402
from dunning.triggers import Trigger, TriggerKind  # noqa: E402
from entitlements.models import Restriction  # noqa: E402

DAY = 86400
WEEK = 7 * DAY
PAID_INVOICES = 199  # long history: 199 paid on the first attempt, then one in dunning
IN_DUNNING_FOR = 2 * DAY  # the dunning invoice was finalized two days before the run
FAILED_AGO = 2 * 3600  # ... and its charge failed two hours before (retries come later)
REVIEW_MARGIN = timedelta(minutes=5)  # +diff: the clock this far past next_review_at
WRITES = ("INSERT", "UPDATE", "DELETE")


# --------------------------------------------------------------------------- setup


def setup_database() -> None:
    prepare_database(DB_NAME, ADMIN_DSN)


def deliver(event: dict) -> None:
    with transaction.atomic():
        apply_event(WebhookEvent(stripe_event_id=event["id"], payload=event))


def customer(kind: str, k: int) -> StripeCustomer:
    return StripeCustomer(id=f"cus_bench_{kind}{k:05d}", subscription=f"sub_bench_{kind}{k:05d}")


def suffix(c: StripeCustomer) -> str:
    return c.id.removeprefix("cus_")


def dunning_events(c: StripeCustomer, run_at: int) -> None:
    """The renewal invoice was finalized IN_DUNNING_FOR before the run; its first charge
    failed (a soft decline) FAILED_AGO before it, so the first retry is hours away."""
    c.t = run_at - IN_DUNNING_FOR
    c.invoice_event("invoice.finalized")
    c.t = run_at - FAILED_AGO
    c.charge_event("charge.failed", f"ch_{suffix(c)}_fail1", decline_code="insufficient_funds")
    c.invoice_event("invoice.payment_failed", attempt_count=1)


def short_history(c: StripeCustomer, run_at: int) -> list[dict]:
    c.t = run_at - IN_DUNNING_FOR - DAY
    c.subscription_event("customer.subscription.created")
    dunning_events(c, run_at)
    return c.events


def paid_history(c: StripeCustomer, run_at: int) -> list[dict]:
    """The subscription, then PAID_INVOICES weekly invoices paid on the first attempt."""
    start = run_at - IN_DUNNING_FOR
    c.t = start - (PAID_INVOICES + 1) * WEEK
    c.subscription_event("customer.subscription.created")
    for i in range(PAID_INVOICES):
        invoice_id = f"in_{suffix(c)}_{i:03d}"
        c.t = start - (PAID_INVOICES - i) * WEEK
        c.invoice_event("invoice.finalized", invoice_id=invoice_id)
        c.tick(3600)
        c.charge_event(
            "charge.succeeded", f"ch_{suffix(c)}_{i:03d}", invoice_id=invoice_id, status="succeeded"
        )
        c.invoice_event("invoice.paid", invoice_id=invoice_id, status="paid", attempt_count=1)
    return c.events


def _copy(row, old: str, new: str, event_ids: dict[str, str], **overrides):
    """An unsaved copy of `row` for another customer: ids rewritten, event ids fresh."""
    values = {}
    for f in row._meta.concrete_fields:
        if f.primary_key:
            continue
        value = getattr(row, f.attname)
        if f.attname == "version_event_id":
            value = event_ids.setdefault(value, samples.new_id("evt"))
        elif isinstance(value, str):
            value = value.replace(old, new)
        values[f.attname] = value
    values.update(overrides)
    return type(row)(**values)


def clone_paid_history(template: Account, old: str, c: StripeCustomer) -> Account:
    """Copy the template's mirror rows (everything but its dunning invoice) to `c`."""
    new = suffix(c)
    event_ids: dict[str, str] = {}
    with transaction.atomic():
        account = Account.objects.create(
            **{
                f.attname: getattr(template, f.attname)
                for f in Account._meta.concrete_fields
                if not f.primary_key and f.attname not in ("stripe_customer_id", "created_at")
            },
            stripe_customer_id=c.id,
        )
        Subscription.objects.bulk_create(
            _copy(s, old, new, event_ids, account_id=account.pk)
            for s in Subscription.objects.filter(account=template)
        )
        paid = list(
            Invoice.objects.filter(account=template)
            .exclude(stripe_invoice_id=f"in_{old}")
            .order_by("pk")
        )
        copies = Invoice.objects.bulk_create(
            _copy(i, old, new, event_ids, account_id=account.pk) for i in paid
        )
        invoice_map = {i.pk: copy.pk for i, copy in zip(paid, copies, strict=True)}
        PaymentAttempt.objects.bulk_create(
            _copy(
                a, old, new, event_ids, account_id=account.pk, invoice_id=invoice_map[a.invoice_id]
            )
            for a in PaymentAttempt.objects.filter(invoice_id__in=invoice_map).order_by("pk")
        )
    return account


def fingerprint(account: Account) -> dict:
    """Every store of an account, with its own ids normalised away."""
    name = account.stripe_customer_id.removeprefix("cus_")

    def rows(queryset, skip=("id", "account_id", "invoice_id", "version_event_id")):
        out = []
        for row in queryset:
            out.append(
                tuple(
                    (f.attname, str(v).replace(name, "X") if isinstance(v, str) else v)
                    for f in row._meta.concrete_fields
                    if f.attname not in skip
                    for v in [getattr(row, f.attname)]
                )
            )
        return sorted(out, key=repr)

    case_skip = ("id", "account_id", "last_decision_id", "opened_at", "level_since")
    return {
        "account": rows([account], ("id", "created_at")),
        "subscriptions": rows(Subscription.objects.filter(account=account)),
        "invoices": rows(Invoice.objects.filter(account=account)),
        "attempts": rows(PaymentAttempt.objects.filter(account=account)),
        "cases": rows(DunningCase.objects.filter(account=account), case_skip),
        "restrictions": sorted(
            Restriction.objects.filter(account=account).values_list("code", "level")
        ),
        "standing": list(
            AccountStanding.objects.filter(account=account).values_list("requested", "acknowledged")
        ),
    }


def build(n: int) -> tuple[list[int], list[int]]:
    # One reference time for all: every account's dunning invoice is the same age.
    run_at = int(timezone.now().timestamp())
    started = time.perf_counter()
    short_ids = []
    for k in range(n):
        c = customer("s", k)
        for event in short_history(c, run_at):
            deliver(event)
        short_ids.append(Account.objects.get(stripe_customer_id=c.id).pk)
    built_short = time.perf_counter()

    template_customer = customer("l", 0)
    paid_history(template_customer, run_at)
    dunning_events(template_customer, run_at)
    for event in template_customer.events:
        deliver(event)
    template = Account.objects.get(stripe_customer_id=template_customer.id)
    built_template = time.perf_counter()
    long_ids = [template.pk]
    for k in range(1, n):
        c = customer("l", k)
        account = clone_paid_history(template, suffix(template_customer), c)
        dunning_events(c, run_at)
        for event in c.events:
            deliver(event)
        long_ids.append(account.pk)
    ran = outbox.drain()
    built_long = time.perf_counter()
    print(
        f"built {n} short accounts in {built_short - started:.1f} s, the long template "
        f"({len(template_customer.events)} events) in {built_template - built_short:.1f} s, "
        f"{n - 1} long copies in {built_long - built_template:.1f} s "
        f"({ran} outbox items drained)"
    )

    expected = fingerprint(template)
    counts = (len(expected["invoices"]), len(expected["attempts"]))
    if counts != (PAID_INVOICES + 1, PAID_INVOICES + 1):
        raise BenchError(f"long template has {counts} invoices/attempts")
    for pk in long_ids[1:]:
        if fingerprint(Account.objects.get(pk=pk)) != expected:
            raise BenchError(f"long account {pk} differs from the template it was copied from")
    first_short = fingerprint(Account.objects.get(pk=short_ids[0]))
    for pk in short_ids[1:]:
        if fingerprint(Account.objects.get(pk=pk)) != first_short:
            raise BenchError(f"short account {pk} differs from the first short account")
    for label, fp in (("short", first_short), ("long", expected)):
        if _case_summary(fp) != [("retrying", "", "notice")]:
            raise BenchError(f"{label} accounts are not in dunning at notice: {fp['cases']}")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return short_ids, long_ids


def _case_summary(fp: dict) -> list[tuple]:
    return [
        tuple(dict(case)[name] for name in ("state", "resolution", "level")) for case in fp["cases"]
    ]


# ------------------------------------------------------------------ measured operations


def baseline(account_id: int) -> None:
    with transaction.atomic():
        Account.objects.select_for_update().get(pk=account_id)
        Account.objects.filter(pk=account_id).update(email=F("email"))


def recompute_empty(account_id: int) -> None:
    outcome = handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id, source="bench"))
    if outcome.changes:
        raise BenchError(f"account {account_id}: expected an empty diff, got {outcome.changes}")


class Clock:
    """Stands in for core.clock.now during the +diff phase: the real clock, or that
    plus the time until an account's case is due for review."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.to_review: dict[int, timedelta] = {}

    def __call__(self):
        return timezone.now() + self.offset

    def plan(self, account_ids: list[int]) -> None:
        now = timezone.now()
        due = dict(
            DunningCase.objects.filter(
                account_id__in=account_ids, state__in=OPEN_STATES
            ).values_list("account_id", "next_review_at")
        )
        if None in (due.get(pk) for pk in account_ids):
            raise BenchError("an open case has no next_review_at: nothing for time to change")
        self.to_review = {pk: due[pk] - now + REVIEW_MARGIN for pk in account_ids}


BENCH_CLOCK = Clock()


def step_up(account_id: int) -> Outcome:
    """TIME_PASSED with the clock just past the case's next_review_at, as beat would
    recompute it then: the ladder moves a step."""
    BENCH_CLOCK.offset = BENCH_CLOCK.to_review[account_id]
    try:
        outcome = handle(Trigger(TriggerKind.TIME_PASSED, account_id, source="bench"))
    finally:
        BENCH_CLOCK.offset = timedelta(0)
    if not outcome.changes:
        raise BenchError(f"account {account_id}: nothing changed at its next_review_at")
    return outcome


def step_back(account_id: int) -> None:
    """TIME_PASSED on the real clock: the account goes back to where it was."""
    if not handle(Trigger(TriggerKind.TIME_PASSED, account_id, source="bench:reset")).changes:
        raise BenchError(f"account {account_id}: the reset recompute changed nothing")


def recompute_nonempty(account_id: int) -> tuple[int, int]:
    """Wall and CPU ns of one recompute that moves the ladder a step; the account is then
    put back, untimed."""
    cpu, started = time.process_time_ns(), time.perf_counter_ns()
    step_up(account_id)
    elapsed, cpu = time.perf_counter_ns() - started, time.process_time_ns() - cpu
    step_back(account_id)
    return elapsed, cpu


@contextlib.contextmanager
def nonempty_phase(*, drain: bool = True):
    with (
        mock.patch.object(clock, "now", BENCH_CLOCK),
        mock.patch.object(outbox_items, "kick_dispatcher", lambda: None),
    ):
        yield
    if drain:
        converge()


def converge() -> None:
    """Untimed: run the standing items the +diff phase left (those decided on the
    advanced clock are made due now; the step back superseded them)."""
    now = timezone.now()
    OutboxItem.objects.filter(
        kind=OutboxItem.Kind.ACCOUNT_STANDING,
        status=OutboxItem.Status.PENDING,
        next_attempt_at__gt=now,
    ).update(next_attempt_at=now)
    outbox.drain()


CLK_TCK = os.sysconf("SC_CLK_TCK")
OTHER_CPU_WARN = 0.10  # warn when processes outside the benchmark take >10% of the CPUs


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def backend_cpu_s() -> float:
    """CPU seconds used so far by this connection's PostgreSQL backend (same machine)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:  # nanoseconds on the CPU, where the kernel keeps them; else clock ticks
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")  # PostgreSQL runs elsewhere
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Phase:
    """One phase of one round: wall ns of each call, CPU seconds of both processes."""

    wall_ns: list[int]
    cpu_s: float
    pg_cpu_s: float


def run_phase(name: str, ids: list[int]) -> Phase:
    pg_cpu = backend_cpu_s()
    if name.endswith("+diff"):
        with nonempty_phase(drain=False):
            walls, cpus = zip(*(recompute_nonempty(pk) for pk in ids), strict=True)
        # The backend's CPU is only known per phase, and the phase also ran the untimed
        # step back (much the same work): count half of it.
        phase = Phase(list(walls), sum(cpus) / 1e9, (backend_cpu_s() - pg_cpu) / 2)
        converge()
        return phase
    fn = baseline if name == "baseline" else recompute_empty
    walls = []
    cpu = time.process_time()
    for pk in ids:
        started = time.perf_counter_ns()
        fn(pk)
        walls.append(time.perf_counter_ns() - started)
    return Phase(walls, time.process_time() - cpu, backend_cpu_s() - pg_cpu)


# ------------------------------------------------------------------------- reporting


def queries_of(fn, account_id: int) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        fn(account_id)
    return [q["sql"] for q in captured.captured_queries]


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> float:
    return os.getloadavg()[0]


def profile_long(ids: list[int], top: int) -> dict:
    """cProfile of the empty recompute of long accounts, and the share waiting on SQL."""
    sql_ns = [0]

    def timed_execute(execute, sql, params, many, context):
        started = time.perf_counter_ns()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_ns[0] += time.perf_counter_ns() - started

    breakdown = {}
    for label, fn in (("baseline", baseline), ("recompute", recompute_empty)):
        sql_ns[0] = 0
        started = time.perf_counter_ns()
        with connection.execute_wrapper(timed_execute):
            for pk in ids:
                fn(pk)
        total = time.perf_counter_ns() - started
        breakdown[label] = {
            "mean_us": total / len(ids) / 1000,
            "in_sql_us": sql_ns[0] / len(ids) / 1000,
        }
    print("\nlong accounts, where one call's time goes (execute_wrapper):")
    for label, row in breakdown.items():
        other = row["mean_us"] - row["in_sql_us"]
        print(
            f"  {label:<10} {row['mean_us']:8.0f} µs = {row['in_sql_us']:6.0f} µs in "
            f"cursor.execute (SQL + driver) + {other:6.0f} µs elsewhere (Python, commit)"
        )

    profiler = cProfile.Profile()
    profiler.enable()
    for pk in ids:
        recompute_empty(pk)
    profiler.disable()
    for sort in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(top)
        print(f"\ncProfile, empty recompute of {len(ids)} long accounts, by {sort}:")
        print(out.getvalue())
    return breakdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--accounts", type=int, default=80, help="accounts per history kind")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (plus a warm-up)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the long recompute")
    args = parser.parse_args()
    if args.accounts < 2 or args.rounds < 1:
        parser.error("--accounts must be >= 2 and --rounds >= 1")
    if settings.DEBUG:
        raise BenchError("DEBUG is on: every query would be kept in memory")
    run_started = time.perf_counter()
    load_before = load_average()

    setup_database()
    short_ids, long_ids = build(args.accounts)

    # Converged: a recompute is an empty diff and writes nothing (every account is also
    # checked in every empty-diff phase below).
    sql = {"short": queries_of(recompute_empty, short_ids[0])}
    sql["long"] = queries_of(recompute_empty, long_ids[0])
    sql["baseline"] = queries_of(baseline, long_ids[0])
    for label in ("short", "long"):
        if [q for q in sql[label] if q.split()[0] in WRITES]:
            raise BenchError(f"an empty {label} recompute wrote: {sql[label]}")
    BENCH_CLOCK.plan(short_ids + long_ids)
    step_changes = {}
    with nonempty_phase():
        for label, ids in (("short+diff", short_ids), ("long+diff", long_ids)):
            with CaptureQueriesContext(connection) as captured:
                outcome = step_up(ids[0])
            sql[label] = [q["sql"] for q in captured.captured_queries]
            step_changes[label] = [f"{c.store}.{c.field}" for c in outcome.changes]
            step_back(ids[0])

    # A ladder step costs several times an empty recompute, and so does putting the
    # account back: measured on a quarter of the accounts to keep the run short.
    n_diff = max(2, args.accounts // 4)
    phases = {
        "baseline": short_ids + long_ids,
        "short": short_ids,
        "long": long_ids,
        "short+diff": short_ids[:n_diff],
        "long+diff": long_ids[:n_diff],
    }
    order = list(phases)
    rounds: dict[str, list[Phase]] = {name: [] for name in phases}
    measure_started = time.perf_counter()
    busy, own, pg_own = machine_busy_s(), time.process_time(), backend_cpu_s()
    for round_no in range(args.rounds + 1):
        round_order = order if round_no % 2 == 0 else order[::-1]
        for name in round_order:
            phase = run_phase(name, phases[name])
            if round_no > 0:  # round 0 warms up caches, plans and the connection
                rounds[name].append(phase)
    measured_s = time.perf_counter() - measure_started
    load_after = load_average()
    ours = time.process_time() - own + backend_cpu_s() - pg_own
    other_cpu = max(0.0, (machine_busy_s() - busy - ours) / (measured_s * os.cpu_count()))

    base_mean = statistics.fmean(w for p in rounds["baseline"] for w in p.wall_ns)
    rows = {}
    for name, measured in rounds.items():
        values = [w for p in measured for w in p.wall_ns]
        mean = statistics.fmean(values)
        ratios = [
            statistics.fmean(p.wall_ns) / statistics.fmean(b.wall_ns)
            for p, b in zip(measured, rounds["baseline"], strict=True)
        ]
        rows[name] = {
            "calls": len(values),
            "per_second": 1e9 / mean,
            "mean_us": mean / 1000,
            "p50_us": percentile(values, 0.50) / 1000,
            "p99_us": percentile(values, 0.99) / 1000,
            "cpu_us": sum(p.cpu_s for p in measured) / len(values) * 1e6,
            "pg_cpu_us": sum(p.pg_cpu_s for p in measured) / len(values) * 1e6,
            "cost_ratio": mean / base_mean,
            "cost_ratio_by_round": [round(r, 3) for r in ratios],
            "queries": len(sql[name]),
        }

    base_cpu = rows["baseline"]["cpu_us"] + rows["baseline"]["pg_cpu_us"]
    for row in rows.values():
        row["cpu_ratio"] = (row["cpu_us"] + row["pg_cpu_us"]) / base_cpu

    title = {
        "baseline": "baseline: SELECT FOR UPDATE + UPDATE",
        "short": "recompute, short history, empty diff",
        "long": "recompute, long history, empty diff",
        "short+diff": "recompute, short history, ladder step",
        "long+diff": "recompute, long history, ladder step",
    }
    print(
        f"\nPostgreSQL {connection.pg_version // 10000}, {args.accounts} short + "
        f"{args.accounts} long accounts ({PAID_INVOICES + 1} invoices each; ladder steps on "
        f"{n_diff} + {n_diff}), "
        f"{args.rounds} rounds + 1 warm-up, {measured_s:.1f} s measured; "
        f"load average {load_before:.2f} -> {load_after:.2f} on {os.cpu_count()} CPUs; "
        f"other processes used {other_cpu:.0%} of the CPUs while measuring\n"
    )
    if other_cpu > OTHER_CPU_WARN:
        print(
            "WARNING: the machine was busy with other work: wall times are inflated, "
            "the CPU ratio (last column) is the steadier figure\n"
        )
    print(
        f"{'':39}{'per s':>7}{'mean µs':>9}{'p50 µs':>8}{'p99 µs':>8}{'py cpu':>8}{'pg cpu':>8}"
        f"{'queries':>8}{'cost ratio':>12}{'by round':>16}{'cpu ratio':>11}"
    )
    for name, row in rows.items():
        spread = row["cost_ratio_by_round"]
        approx = "~" if name.endswith("+diff") else " "
        print(
            f"{title[name]:39}{row['per_second']:7.0f}{row['mean_us']:9.0f}"
            f"{row['p50_us']:8.0f}{row['p99_us']:8.0f}{row['cpu_us']:8.0f}"
            f"{approx}{row['pg_cpu_us']:7.0f}{row['queries']:8d}"
            f"{row['cost_ratio']:11.2f}x{min(spread):9.2f}-{max(spread):.2f}x"
            f"{row['cpu_ratio']:10.2f}x"
        )
    print(
        "  cost ratio: mean wall time / the baseline's (by round: min-max of the rounds);\n"
        "  py cpu, pg cpu: CPU µs per call of this process, of its PostgreSQL backend (~: half\n"
        "  of the +diff phase, which also ran the untimed step back); cpu ratio: their sum /\n"
        "  the baseline's"
    )
    verdicts = {name: rows[name]["cost_ratio"] <= TARGET_RATIO for name in ("short", "long")}
    print(
        f"\ntarget: an empty-diff recompute costs <= {TARGET_RATIO:g}x the baseline: "
        + ", ".join(
            f"{name} {rows[name]['cost_ratio']:.2f}x {'PASS' if ok else 'FAIL'}"
            for name, ok in verdicts.items()
        )
        + " (by CPU: "
        + ", ".join(f"{name} {rows[name]['cpu_ratio']:.2f}x" for name in verdicts)
        + ")"
    )
    print("\nSQL per call (one call each, CaptureQueriesContext):")
    for name, statements in sql.items():
        kinds = Counter(s.split()[0] for s in statements)
        print(
            f"  {name:<11}{len(statements):3d}  " + ", ".join(f"{k} {v}" for k, v in kinds.items())
        )
    for name, changed in step_changes.items():
        print(f"  {name} changed: {', '.join(changed)}")

    profile = profile_long(long_ids, top=30) if args.profile else None

    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "recompute",
        "database": DB_NAME,
        "postgres_version": connection.pg_version,
        "accounts_per_kind": args.accounts,
        "long_history_invoices": PAID_INVOICES + 1,
        "rounds": args.rounds,
        "target_ratio": TARGET_RATIO,
        "target_met": verdicts,
        "results": rows,
        "sql": sql,
        "ladder_step_changes": step_changes,
        "profile_long": profile,
        "measured_seconds": round(measured_s, 2),
        "total_seconds": round(time.perf_counter() - run_started, 2),
        "load_average": [load_before, load_after],
        "other_cpu_share": round(other_cpu, 3),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "at": timezone.now().isoformat(),
    }
    (RESULTS / "recompute.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'recompute.json'} ({report['total_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
