#!/usr/bin/env python
"""Where does the drift scan spend its time per candidate? In-process, on a built book.

    .venv/bin/python bench/profile_drift.py [--repeat 3] [--profile compute|read|none]
                                            [--sort tottime|cumulative] [--top 30]
                                            [--collector on|paused] [--scans N]

Reads the candidates of the drift bench's big book (`dunning_bench_drift`, or
BENCH_DRIFT_DATABASE; build one first: `bench/drift.py --accounts 50000 --build-only`)
at the bench's NOW, batch by batch as `scan()` does, and times each stage per candidate
on one thread, with no read-ahead, in CPU seconds (this process's; the read's backend's
apart): the read (`read_snapshots`: SQL and rows -> snapshots), `compute()` and `diff()`.
Median of --repeat passes. Then a cProfile of one stage. These passes write nothing.

--scans N then runs `scan()` itself N times, the bench's drift put back before each (the
book is written to, as bench/drift.py does): its CPU per candidate, this process's and the
book's backends', remediations included; the figure to compare two versions of the code
on a shared machine, where the wall time mostly measures the neighbours.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DB = os.environ.get("BENCH_DRIFT_DATABASE", "dunning_bench_drift")
os.environ.update(
    DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB}",
    DJANGO_SETTINGS_MODULE="config.settings",
    DJANGO_DEBUG="false",
    CELERY_BROKER_URL="",
    DUNNING_TEST_CLOCK="false",
    DUNNING_ROLLOUT_DEFAULT_STAGE="100",
    # As bench/drift.py: remediations run their side effects in-process, sending nothing.
    ACCOUNT_MANAGEMENT_URL="",
    DUNNING_OUTCOME_WEBHOOK_URLS="",
    EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
    DRIFT_GUARD_SECONDS="900",
    STRIPE_API_KEY="",
    LOG_LEVEL="WARNING",
    SENTRY_DSN="",
)

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

import dunning.effects  # noqa: E402, F401  (import order: see bench/drift.py)
from bench.common import median  # noqa: E402
from bench.drift_book import NOW, SCAN_EVERY  # noqa: E402
from bench.drift_measure import drift_accounts, reset  # noqa: E402
from bench.processes import DuringMeasurement, load_average, process_cpu_s  # noqa: E402
from core import clock  # noqa: E402
from dunning import drift  # noqa: E402
from dunning.compute import compute  # noqa: E402
from dunning.diff import diff  # noqa: E402
from dunning.policy import current_policy  # noqa: E402
from dunning.snapshot_batch import read_snapshots  # noqa: E402


def one_pass(ids: list[int], policy) -> dict[str, float]:
    """CPU seconds spent in each stage over every candidate (this process's, and for the
    read its backend's too), and how many would change. CPU, not wall time: on a shared
    machine the wall time says as much about the neighbours as about the code."""
    backend = connection.connection.info.backend_pid if connection.connection else 0
    spent = {"read": 0.0, "read_db": 0.0, "compute": 0.0, "diff": 0.0, "drifted": 0}
    for start in range(0, len(ids), drift.BATCH):
        batch = ids[start : start + drift.BATCH]
        pg = process_cpu_s(backend) if backend else 0.0
        t0 = time.process_time()
        snapshots = read_snapshots(batch, now=NOW, policy=policy)
        t1 = time.process_time()
        if not backend:  # connected by the first read
            backend = connection.connection.info.backend_pid
        else:
            spent["read_db"] += process_cpu_s(backend) - pg
        desired = {a: compute(s, NOW, policy) for a, s in snapshots.items()}
        t2 = time.process_time()
        spent["drifted"] += sum(bool(diff(snapshots[a], d, NOW)) for a, d in desired.items())
        spent["read"] += t1 - t0
        spent["compute"] += t2 - t1
        spent["diff"] += time.process_time() - t2
    return spent


def scans(count: int) -> None:
    """scan() itself, `count` times on the same book: CPU per candidate and wall time."""
    runs = []
    for _ in range(count):
        reset(drift_accounts()[0])
        cpu = time.process_time()
        with DuringMeasurement(DB) as during:
            started = time.perf_counter()
            run = drift.scan()
            wall = time.perf_counter() - started
        own = time.process_time() - cpu
        runs.append((own + during.backends_cpu_s, own, wall, max(during.samples)))
    n = run.candidates
    each = ", ".join(f"{total / n * 1000:.3f}" for total, *_ in runs)
    print(
        f"scan(): {n:,} candidates, {run.drifted} drifted, {run.remediated} remediated; CPU a "
        f"candidate {median([r[0] for r in runs]) / n * 1000:.3f} ms (runs {each}), of it "
        f"this process {median([r[1] for r in runs]) / n * 1000:.3f} ms; wall "
        f"{median([r[2] for r in runs]):.2f} s; load average up to {max(r[3] for r in runs):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", choices=["compute", "read", "none"], default="compute")
    parser.add_argument("--sort", choices=["tottime", "cumulative"], default="tottime")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--collector",
        choices=["on", "paused"],
        default="on",
        help="the cyclic garbage collector during the passes (scan() pauses it)",
    )
    parser.add_argument("--scans", type=int, default=0, help="then time scan() this many times")
    args = parser.parse_args()
    if args.collector == "paused":
        gc.disable()
    with mock.patch.object(clock, "now", lambda: NOW):
        policy = current_policy()
        ids = sorted(drift.candidates(since=NOW - SCAN_EVERY))
        if not ids:
            raise SystemExit(f"{DB} has no candidates: build the book first")
        passes = [one_pass(ids, policy) for _ in range(args.repeat)]
        load = load_average()
        n = len(ids)
        print(
            f"{DB}: {n:,} candidates, {passes[0]['drifted']} would change; load {load:.2f}; "
            f"garbage collector {args.collector}"
        )
        total = 0.0
        for stage in ("read", "compute", "diff", "read_db"):
            per = median([p[stage] for p in passes]) / n * 1000
            total += per if stage != "read_db" else 0.0
            runs = ", ".join(f"{p[stage] / n * 1000:.3f}" for p in passes)
            print(f"  {stage:<8} {per:.3f} ms CPU a candidate (passes: {runs})")
        print(
            f"  in this process {total:.3f} ms CPU a candidate (PostgreSQL's part, read_db, "
            f"runs on the other core while the scan computes); 22,000 candidates (the 1M book) "
            f"-> {total * 22:.1f} s of CPU before remediation"
        )
        if args.profile != "none":
            snapshots = {}
            for start in range(0, n, drift.BATCH):
                batch = ids[start : start + drift.BATCH]
                snapshots.update(read_snapshots(batch, now=NOW, policy=policy))
            profiler = cProfile.Profile(time.process_time)  # CPU, as the stages above
            if args.profile == "compute":
                profiler.enable()
                for snapshot in snapshots.values():
                    compute(snapshot, NOW, policy)
            else:
                profiler.enable()
                for start in range(0, n, drift.BATCH):
                    read_snapshots(ids[start : start + drift.BATCH], now=NOW, policy=policy)
            profiler.disable()
            pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
        gc.enable()  # scan() pauses it itself, as in a worker
        if args.scans:
            scans(args.scans)


if __name__ == "__main__":
    main()
