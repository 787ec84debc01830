#!/usr/bin/env python
"""Benchmark: the beat dispatcher handing due payment retries to workers, vs no-op tasks.

    .venv/bin/python bench/retry_dispatch.py [--retries 10000] [--limit 500] [--rounds 3]
                                             [--e2e 2000 | --e2e 0] [--e2e-timeout 60]
                                             [--pool solo|prefork] [--profile]

What it does, end to end:
  1. creates the PostgreSQL database `dunning_bench_dispatch` if missing, migrates it and
     empties it (`flush`); the broker is Redis db 13 (`redis://127.0.0.1:6379/13`), Celery
     is not eager, no STRIPE_API_KEY (workers use the SIMULATED gateway);
  2. creates one account per retry (production has at most one pending retry per
     account) and one open invoice per account;
  3. measures --rounds rounds, after one small warm-up round. Each round truncates and
     refills the outbox (untimed) with --retries due PAYMENT_RETRY items
     (next_attempt_at = now - 1 s), then interleaves, tick by tick in ABBA order
     (D B, B D, ...; the first tick's order alternates between rounds):
       D  dispatcher   one `dunning.outbox.dispatch_due(limit=--limit)` call, as one beat
                       tick: claim with SKIP LOCKED, lease, publish one
                       `run_outbox_item` per item. "Handed to workers" = published on
                       the broker; no worker runs;
       B  baseline     --limit plain no-op Celery tasks published with `apply_async` to
                       the same broker;
     until both have handed over --retries. Only the calls are timed. Checked after each
     round: the `celery` queue holds exactly --retries `run_outbox_item` messages (their
     ids are the outbox ids) and --retries no-ops, every row has `claimed_until` set,
     nothing is left to claim; then the queue is purged. Rate = items / time; ratio =
     dispatcher rate / baseline rate (1.0 = dispatching costs nothing beyond publishing);
     the table shows the medians;
  4. splits the dispatcher's time (one extra run): claiming alone (`claim_due` in --limit
     batches, per-tick times kept) then publishing alone (`run_outbox_item` for the same
     ids); prints the claim query's plan once every item is leased, and what the beat
     schedule alone allows (dispatch_outbox every OUTBOX_DISPATCH_SECONDS, one
     dispatch_due() of its default limit each). With --profile, also a cProfile of one
     whole dispatcher run, and the cost of `run_item` in this process (time, SQL
     statements and time waiting on PostgreSQL, cProfile) on 50 accounts of their own;
  5. unless --e2e 0: starts a real worker (`celery -A config worker -P solo -Q celery`,
     or --pool prefork with --concurrency 2; log to bench/results/retry_dispatch_worker.log)
     and measures end to end, dispatch to execution: --e2e no-op tasks (until the queue
     and the unacked set are empty), --e2e retries (until every item has left `pending`,
     capped at --e2e-timeout seconds: past it the rate is items finished / time taken;
     the worker pays each open invoice on the SIMULATED gateway, records the result and
     recomputes the account), --e2e no-op tasks again. In-worker task runtimes come from
     the worker log. The worker's process group is stopped at the end, whatever happens;
  6. prints the table and writes bench/results/retry_dispatch.json.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import cProfile
import inspect
import io
import json
import logging
import os
import platform
import pstats
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as `python bench/retry_dispatch.py`, sys.path[0] is bench/; make the repo root
# importable instead (and do not let bench/*.py shadow top-level module names).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DB_NAME = "dunning_bench_dispatch"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BROKER_URL = "redis://127.0.0.1:6379/13"
QUEUE = "celery"
# What kombu's Redis transport keeps for the default queue and for unacked messages.
BROKER_KEYS = (QUEUE, "unacked", "unacked_index", "unacked_mutex")
RESULTS = ROOT / "bench" / "results"
NOOP_TASK = "bench.retry_dispatch.noop"
RUN_ITEM_SAMPLE = 50
RUN_ITEM_TASK = "dunning.tasks.run_outbox_item"

# The worker subprocess imports this module (`--include bench.retry_dispatch`) to learn
# the no-op task, so everything below up to the task runs in both processes.
os.environ.update(
    DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    CELERY_BROKER_URL=BROKER_URL,
    CELERY_TASK_ALWAYS_EAGER="false",
    DJANGO_SETTINGS_MODULE="config.settings",
    DJANGO_DEBUG="false",
    DUNNING_TEST_CLOCK="false",  # the system clock: no query per clock read
    STRIPE_API_KEY="",  # workers use the SIMULATED gateway
    ACCOUNT_MANAGEMENT_URL="",
    SENTRY_DSN="",
)

import django  # noqa: E402
import redis  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.database import BenchError, prepare_database  # noqa: E402
from billing_events.models import Account, Invoice  # noqa: E402
from config.celery import app  # noqa: E402
from dunning import outbox  # noqa: E402
from dunning.models import OutboxItem  # noqa: E402
from dunning.tasks import run_outbox_item  # noqa: E402


@app.task(name=NOOP_TASK)
def noop() -> None:
    """The baseline: a Celery task that does nothing."""


def broker() -> redis.Redis:
    return redis.Redis.from_url(BROKER_URL)


def purge() -> None:
    broker().delete(*BROKER_KEYS)


def queue_length() -> int:
    return broker().llen(QUEUE)


# --------------------------------------------------------------------------- setup


def setup_database() -> None:
    prepare_database(DB_NAME, ADMIN_DSN)


def create_accounts(n: int) -> list[tuple[int, str]]:
    """n accounts, each with one open invoice: [(account id, invoice id)]."""
    now = timezone.now()
    accounts = Account.objects.bulk_create(
        [Account(stripe_customer_id=f"cus_bench_dispatch_{k:05d}") for k in range(n)],
        batch_size=2000,
    )
    invoices = [
        Invoice(
            stripe_invoice_id=f"in_bench_dispatch_{k:05d}",
            account=account,
            status=Invoice.Status.OPEN,
            amount_due=4900,
            amount_remaining=4900,
            currency="usd",
            billing_reason="subscription_cycle",
            attempt_count=1,
            stripe_created=now - timedelta(days=2),
            finalized_at=now - timedelta(days=2),
            version=now - timedelta(days=2),
            version_event_id=f"evt_bench_dispatch_{k:05d}",
        )
        for k, account in enumerate(accounts)
    ]
    Invoice.objects.bulk_create(invoices, batch_size=2000)
    return [(a.pk, i.stripe_invoice_id) for a, i in zip(accounts, invoices, strict=True)]


def load_outbox(targets: list[tuple[int, str]], tag: str) -> None:
    """Empty the outbox, then one due PAYMENT_RETRY item per (account, invoice)."""
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {OutboxItem._meta.db_table}")
    now = timezone.now()
    due = now - timedelta(seconds=1)
    OutboxItem.objects.bulk_create(
        [
            OutboxItem(
                account_id=account_id,
                kind=OutboxItem.Kind.PAYMENT_RETRY,
                key=f"retry:{invoice_id}:2:{tag}",
                payload={"stripe_invoice_id": invoice_id, "attempt_number": 2},
                next_attempt_at=due,
                created_at=now,
            )
            for account_id, invoice_id in targets
        ],
        batch_size=2000,
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {OutboxItem._meta.db_table}")


# --------------------------------------------------------------------------- phases


def measure_round(targets, limit: int, tag: str, *, dispatcher_first: bool) -> dict:
    """One round: --retries items handed over by dispatch_due ticks of `limit`, and as
    many no-op publishes in chunks of the same size, interleaved tick by tick in ABBA
    order (D B, B D, D B, ...) so both see the same background load. Only the calls
    themselves are timed."""
    n = len(targets)
    load_outbox(targets, tag)
    purge()
    dispatcher = baseline = 0.0
    claimed = published = ticks = 0
    while claimed < n or published < n:
        tick_first = dispatcher_first == (ticks % 2 == 0)
        for phase in ("dispatcher", "baseline") if tick_first else ("baseline", "dispatcher"):
            if phase == "dispatcher" and claimed < n:
                start = time.perf_counter()
                got = outbox.dispatch_due(limit=limit)
                dispatcher += time.perf_counter() - start
                if not got:
                    raise BenchError(f"dispatch_due claimed nothing with {n - claimed} due")
                claimed += got
            elif phase == "baseline" and published < n:
                chunk = min(limit, n - published)
                start = time.perf_counter()
                for _ in range(chunk):
                    noop.apply_async()
                baseline += time.perf_counter() - start
                published += chunk
        ticks += 1
    check_dispatched(n, claimed, noops=published)
    purge()
    return {
        "dispatcher": {"items": n, "seconds": dispatcher, "rate": n / dispatcher},
        "baseline": {"items": n, "seconds": baseline, "rate": n / baseline},
        "ticks": ticks,
        "ratio": baseline / dispatcher,
    }


def check_dispatched(n: int, claimed: int, *, noops: int) -> None:
    """The broker holds one run_outbox_item per item (and `noops` no-ops), every item is
    leased, and nothing is left to claim."""
    if claimed != n:
        raise BenchError(f"dispatch_due claimed {claimed} of {n} due items")
    queued = queue_length()
    if queued != n + noops:
        raise BenchError(f"the {QUEUE} queue holds {queued} messages, expected {n + noops}")
    unleased = OutboxItem.objects.filter(claimed_until__isnull=True).count()
    if unleased:
        raise BenchError(f"{unleased} items have no claimed_until after dispatch")
    ids: list[int] = []
    names: Counter[str] = Counter()
    for raw in broker().lrange(QUEUE, 0, -1):
        message = json.loads(raw)
        names[message["headers"]["task"]] += 1
        if message["headers"]["task"] == RUN_ITEM_TASK:
            task_args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            ids.append(task_args[0])
    expected = set(OutboxItem.objects.values_list("pk", flat=True))
    if names != Counter({RUN_ITEM_TASK: n, NOOP_TASK: noops}) or len(ids) != n:
        raise BenchError(f"unexpected messages on the queue: {dict(names)}")
    if set(ids) != expected:
        raise BenchError(f"queued {RUN_ITEM_TASK} ids are not the {n} outbox item ids")
    if outbox.claim_due(limit=1):
        raise BenchError("an item was still claimable after the dispatcher finished")


def measure_split(targets, limit: int, tag: str) -> dict:
    """The dispatcher's two halves run separately: claim_due alone, then the publishes."""
    n = len(targets)
    load_outbox(targets, tag)
    purge()
    ids: list[int] = []
    ticks = []
    start = time.perf_counter()
    while len(ids) < n:
        tick = time.perf_counter()
        got = outbox.claim_due(limit=limit)
        ticks.append(time.perf_counter() - tick)
        if not got:
            break
        ids += got
    claim = time.perf_counter() - start
    start = time.perf_counter()
    for pk in ids:
        run_outbox_item.apply_async(args=[pk])
    publish = time.perf_counter() - start
    if len(ids) != n or queue_length() != n:
        raise BenchError(f"split run: claimed {len(ids)}, queued {queue_length()}, want {n}")
    purge()
    return {
        "claim_seconds": claim,
        "publish_seconds": publish,
        "claim_tick_ms_first": ticks[0] * 1000,
        "claim_tick_ms_last": ticks[-1] * 1000,
        "claim_tick_ms_median": statistics.median(ticks) * 1000,
        "claim_ticks_ms": [round(t * 1000, 2) for t in ticks],
    }


def explain_claim(limit: int) -> list[str]:
    """The claim query's plan with every item already leased (the last, empty tick)."""
    now = timezone.now()
    qs = (
        OutboxItem.objects.select_for_update(skip_locked=True)
        .filter(status=OutboxItem.Status.PENDING, next_attempt_at__lte=now)
        .exclude(claimed_until__gt=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    with transaction.atomic(), connection.cursor() as cursor:
        sql, params = qs.query.sql_with_params()
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params)
        plan = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)
    return plan


def profile_dispatcher(targets, limit: int, tag: str, top: int = 22) -> str:
    n = len(targets)
    load_outbox(targets, tag)
    purge()
    profiler = cProfile.Profile()
    claimed = 0
    profiler.enable()
    while claimed < n:
        got = outbox.dispatch_due(limit=limit)
        if not got:
            break
        claimed += got
    profiler.disable()
    purge()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


class QueryTimer:
    """connection.execute_wrapper: counts statements and the time spent in them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.verbs: Counter[str] = Counter()

    def __call__(self, execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - start
            self.verbs[sql.split(None, 1)[0].upper()] += 1


def profile_run_item(targets, top: int = 18) -> dict:
    """What one run_item costs in this process (SIMULATED gateway): the first half of the
    items timed with their SQL counted, the second half under cProfile."""
    load_outbox(targets, "run-item")
    purge()
    ids = outbox.claim_due(limit=len(targets))
    timed, profiled = ids[: len(ids) // 2], ids[len(ids) // 2 :]
    gateway_log = logging.getLogger("billing_events.gateway")
    level = gateway_log.level
    gateway_log.setLevel(logging.WARNING)  # one INFO line per payment: not on the console
    timer = QueryTimer()
    profiler = cProfile.Profile()
    try:
        with connection.execute_wrapper(timer):
            start = time.perf_counter()
            for pk in timed:
                outbox.run_item(item_id=pk)
            elapsed = time.perf_counter() - start
        profiler.enable()
        for pk in profiled:
            outbox.run_item(item_id=pk)
        profiler.disable()
    finally:
        gateway_log.setLevel(level)
    purge()  # anything the recomputes published (after-commit dispatcher kicks)
    statuses = dict(OutboxItem.objects.values_list("status").annotate(n=Count("pk")))
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    return {
        "items_timed": len(timed),
        "items_profiled": len(profiled),
        "ms_per_item": elapsed / len(timed) * 1000,
        "queries_per_item": sum(timer.verbs.values()) / len(timed),
        "sql_ms_per_item": timer.seconds / len(timed) * 1000,
        "statements": dict(timer.verbs.most_common()),
        "statuses": statuses,
        "profile": out.getvalue(),
    }


# --------------------------------------------------------------------------- end to end


class Worker:
    """One `celery worker` subprocess on the bench broker, in its own process group."""

    def __init__(self, pool: str, loglevel: str) -> None:
        self.pool = pool
        self.log_path = RESULTS / "retry_dispatch_worker.log"
        self.proc: subprocess.Popen | None = None
        self.loglevel = loglevel

    def start(self) -> None:
        cmd = [
            str(ROOT / ".venv" / "bin" / "celery"),
            "-A",
            "config",
            "worker",
            "-P",
            self.pool,
            "-Q",
            QUEUE,
            "--include",
            "bench.retry_dispatch",
            "-l",
            self.loglevel,
            "-n",
            f"bench-dispatch-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        if self.pool == "prefork":
            cmd += ["--concurrency", "2"]
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(self.stop)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.log.close()


def wait_for(condition, *, timeout: float, worker: Worker, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not worker.alive():
            raise BenchError(f"the worker died while waiting for {what}; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def broker_drained() -> bool:
    r = broker()
    return r.llen(QUEUE) == 0 and r.hlen("unacked") == 0


def pending_items() -> int:
    return OutboxItem.objects.filter(status=OutboxItem.Status.PENDING).count()


def e2e_retries(targets, limit: int, tag: str, worker: Worker, timeout: float) -> dict:
    n = len(targets)
    load_outbox(targets, tag)
    purge()
    claimed = 0
    start = time.perf_counter()
    while claimed < n:
        got = outbox.dispatch_due(limit=limit)
        if not got:
            break
        claimed += got
    dispatched = time.perf_counter() - start
    # Capped: past `timeout`, the rate is the items finished so far over the time taken.
    deadline = start + timeout
    left = n
    while left and time.perf_counter() < deadline:
        if not worker.alive():
            raise BenchError(f"the worker died during the retries; see {worker.log_path}")
        time.sleep(0.05)
        left = pending_items()
    elapsed = time.perf_counter() - start
    capped = bool(left)
    if capped:
        purge()  # the rest is not run; the worker finishes the one in hand
        print(f"  (end-to-end retries capped at {timeout:.0f} s: {n - left} of {n} done)")
    wait_for(broker_drained, timeout=30, worker=worker, what="the last acks")
    statuses = dict(OutboxItem.objects.values_list("status").annotate(n=Count("pk")))
    finished = n - left
    return {
        "items": n,
        "finished": finished,
        "capped": capped,
        "seconds": elapsed,
        "rate": finished / elapsed,
        "dispatch_seconds": dispatched,
        "statuses": statuses,
    }


def task_runtimes(log_path: Path) -> dict:
    """Median and p95 of `Task ... succeeded in Xs` per task name (worker log at INFO)."""
    pattern = re.compile(r"Task (\S+)\[[0-9a-f-]+\] succeeded in ([0-9.e-]+)s")
    times: dict[str, list[float]] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        match = pattern.search(line)
        if match:
            times.setdefault(match.group(1), []).append(float(match.group(2)))
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = {
            "count": len(values),
            "median_ms": statistics.median(values) * 1000,
            "p95_ms": values[int(0.95 * (len(values) - 1))] * 1000,
        }
    return out


def e2e_noops(n: int, worker: Worker, timeout: float) -> dict:
    purge()
    start = time.perf_counter()
    for _ in range(n):
        noop.apply_async()
    published = time.perf_counter() - start
    wait_for(broker_drained, timeout=timeout, worker=worker, what="the no-op tasks")
    elapsed = time.perf_counter() - start
    return {"items": n, "seconds": elapsed, "rate": n / elapsed, "publish_seconds": published}


def measure_e2e(targets, args) -> dict:
    n = args.e2e
    warm, main = targets[:20], targets[20 : 20 + n]
    if len(main) < n:
        raise BenchError(f"--e2e {n} needs --retries >= {n + 20}")
    worker = Worker(args.pool, args.worker_loglevel)
    worker.start()
    try:
        started = time.perf_counter()
        load_outbox(warm, "e2e-warm")
        purge()
        outbox.dispatch_due(limit=args.limit)
        for _ in range(20):
            noop.apply_async()
        wait_for(
            lambda: pending_items() == 0 and broker_drained(),
            timeout=90,
            worker=worker,
            what="the worker to start and run the warm-up",
        )
        startup = time.perf_counter() - started
        noop_before = e2e_noops(n, worker, timeout=120)
        retries = e2e_retries(main, args.limit, "e2e", worker, timeout=args.e2e_timeout)
        noop_after = e2e_noops(n, worker, timeout=120)
    finally:
        worker.stop()
    runtimes = task_runtimes(worker.log_path)
    baseline = statistics.mean([noop_before["rate"], noop_after["rate"]])
    return {
        "pool": args.pool + (" --concurrency 2" if args.pool == "prefork" else ""),
        "worker_loglevel": args.worker_loglevel,
        "worker_startup_and_warmup_seconds": startup,
        "noop_before": noop_before,
        "retries": retries,
        "noop_after": noop_after,
        "noop_rate": baseline,
        "ratio": retries["rate"] / baseline,
        "task_runtimes_in_worker": runtimes,
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retries", type=int, default=10_000, help="due retries (10000)")
    parser.add_argument("--limit", type=int, default=500, help="dispatch_due limit (500)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (3)")
    parser.add_argument(
        "--e2e", type=int, default=2000, help="end-to-end items with a real worker; 0 skips"
    )
    parser.add_argument(
        "--e2e-timeout", type=float, default=60, help="cap on the end-to-end retries (60 s)"
    )
    parser.add_argument("--pool", choices=["solo", "prefork"], default="solo")
    parser.add_argument("--worker-loglevel", default="INFO")
    parser.add_argument("--profile", action="store_true", help="cProfile one dispatcher run")
    args = parser.parse_args()
    n = args.retries
    began = time.perf_counter()
    load_start = os.getloadavg()

    setup_database()
    purge()
    # --profile also runs RUN_ITEM_SAMPLE items in-process, on accounts of their own.
    spare = RUN_ITEM_SAMPLE if args.profile else 0
    targets = create_accounts(max(n, args.e2e + 20 if args.e2e else 0) + spare)
    print(
        f"{n} due PAYMENT_RETRY items over {n} accounts, dispatch_due(limit={args.limit}), "
        f"broker {BROKER_URL}, database {DB_NAME}"
    )

    # Warm-up round (connections, imports, plan cache), not reported.
    measure_round(targets[: min(n, 2 * args.limit)], args.limit, "warm", dispatcher_first=True)

    rounds = []
    for r in range(args.rounds):
        result = measure_round(targets[:n], args.limit, f"r{r}", dispatcher_first=r % 2 == 0)
        rounds.append(result)
        print(
            f"  round {r + 1}: dispatcher {result['dispatcher']['rate']:,.0f}/s, "
            f"no-op {result['baseline']['rate']:,.0f}/s, ratio {result['ratio']:.2f}"
        )

    split = measure_split(targets[:n], args.limit, "split")
    plan = explain_claim(args.limit)
    profile = profile_dispatcher(targets[:n], args.limit, "profile") if args.profile else None
    sample = targets[max(n, args.e2e + 20 if args.e2e else 0) :]
    run_item_cost = profile_run_item(sample) if sample else None
    e2e = measure_e2e(targets, args) if args.e2e else None
    purge()

    med = {
        key: statistics.median(r[key]["rate"] for r in rounds) for key in ("dispatcher", "baseline")
    }
    med_seconds = {
        key: statistics.median(r[key]["seconds"] for r in rounds)
        for key in ("dispatcher", "baseline")
    }
    ratio = statistics.median(r["ratio"] for r in rounds)
    beat_seconds = float(settings.CELERY_BEAT_SCHEDULE["dispatch-outbox"]["schedule"])
    beat_default_limit = inspect.signature(outbox.dispatch_due).parameters["limit"].default
    ticks = -(-n // beat_default_limit)
    beat = {
        "dispatch_outbox_every_seconds": beat_seconds,
        "dispatch_due_default_limit": beat_default_limit,
        "max_rate_from_beat_alone": beat_default_limit / beat_seconds,
        "ticks_for_all": ticks,
        "seconds_for_all_from_beat_alone": (ticks - 1) * beat_seconds,
    }
    per_item_us = {key: med_seconds[key] / n * 1e6 for key in med_seconds}

    print()
    print(f"Handing {n} due retries to the broker (median of {args.rounds} rounds)")
    print(f"  {'':34} {'seconds':>8} {'items/s':>9} {'us/item':>8}")
    print(
        f"  {'dispatcher (dispatch_due x ' + str(-(-n // args.limit)) + ')':34} "
        f"{med_seconds['dispatcher']:8.2f} {med['dispatcher']:9,.0f} "
        f"{per_item_us['dispatcher']:8.0f}"
    )
    print(
        f"  {'baseline (no-op apply_async)':34} {med_seconds['baseline']:8.2f} "
        f"{med['baseline']:9,.0f} {per_item_us['baseline']:8.0f}"
    )
    print(f"  ratio dispatcher / baseline rate: {ratio:.2f} (median of the per-round ratios)")
    print()
    print("Dispatcher split (one run each)")
    print(
        f"  claim_due only  {split['claim_seconds']:6.2f} s  "
        f"({split['claim_seconds'] / n * 1e6:.0f} us/item; tick of {args.limit}: first "
        f"{split['claim_tick_ms_first']:.1f} ms, median {split['claim_tick_ms_median']:.1f} ms,"
        f" last {split['claim_tick_ms_last']:.1f} ms)"
    )
    print(
        f"  publish only    {split['publish_seconds']:6.2f} s  "
        f"({split['publish_seconds'] / n * 1e6:.0f} us/item)"
    )
    print(
        f"  beat cadence: dispatch_outbox every {beat_seconds:g} s, dispatch_due() claims at most"
        f" {beat_default_limit} => at most {beat['max_rate_from_beat_alone']:,.0f} items/s from"
        f" beat alone; {n} due need {ticks} ticks = {beat['seconds_for_all_from_beat_alone']:.0f}"
        f" s (the work itself: {med_seconds['dispatcher']:.1f} s)"
    )
    print("  claim query plan once every item is leased (EXPLAIN ANALYZE):")
    for line in plan:
        print(f"    {line}")
    if e2e:
        print()
        print(
            f"End to end with a real worker ({e2e['pool']}, log level {e2e['worker_loglevel']}), "
            f"{args.e2e} items"
        )
        rows = [
            ("no-op tasks (before)", e2e["noop_before"]),
            ("retries: dispatch + run_item", e2e["retries"]),
            ("no-op tasks (after)", e2e["noop_after"]),
        ]
        for label, row in rows:
            print(f"  {label:34} {row['seconds']:8.2f} s {row['rate']:9,.0f}/s")
        print(
            f"  ratio retries / no-op rate: {e2e['ratio']:.3f}  "
            f"(retry statuses: {e2e['retries']['statuses']}; dispatch part "
            f"{e2e['retries']['dispatch_seconds']:.2f} s)"
        )
        for name, row in sorted(e2e["task_runtimes_in_worker"].items()):
            print(
                f"  in-worker runtime {name}: median {row['median_ms']:.2f} ms, "
                f"p95 {row['p95_ms']:.2f} ms (n={row['count']})"
            )
    if run_item_cost:
        print()
        print(
            f"run_item in this process ({run_item_cost['items_timed']} items timed, SIMULATED "
            f"gateway): {run_item_cost['ms_per_item']:.1f} ms/item, "
            f"{run_item_cost['queries_per_item']:.1f} SQL statements/item "
            f"({run_item_cost['sql_ms_per_item']:.1f} ms/item waiting on PostgreSQL), "
            f"statements {run_item_cost['statements']}, statuses {run_item_cost['statuses']}; "
            f"cProfile of {run_item_cost['items_profiled']} more:"
        )
        print(run_item_cost["profile"])
    if profile:
        print()
        print("cProfile of one dispatcher run")
        print(profile)

    total = time.perf_counter() - began
    print(f"total bench time {total:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "retry_dispatch.json"
    out.write_text(
        json.dumps(
            {
                "retries": n,
                "limit": args.limit,
                "rounds": rounds,
                "median": {
                    "dispatcher_rate": med["dispatcher"],
                    "baseline_rate": med["baseline"],
                    "dispatcher_seconds": med_seconds["dispatcher"],
                    "baseline_seconds": med_seconds["baseline"],
                    "ratio": ratio,
                },
                "split": split,
                "beat": beat,
                "claim_plan_all_leased": plan,
                "run_item_in_process": run_item_cost,
                "e2e": e2e,
                "profile": profile,
                "environment": {
                    "python": platform.python_version(),
                    "django": django.get_version(),
                    "cpus": os.cpu_count(),
                    "broker": BROKER_URL,
                    "database": DB_NAME,
                },
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
                "total_seconds": total,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
