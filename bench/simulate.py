#!/usr/bin/env python
"""Benchmark: the simulator's own speed, in simulated account-days per second, on SQLite and
on PostgreSQL, and how it grows with the size of the book.

    .venv/bin/python bench/simulate.py [--sizes 1000,3000,10000,100000] [--days 30]
        [--databases sqlite,postgresql] [--budget-seconds 900] [--seed 7]

What it does:
  1. for each database and each book size, in a fresh subprocess: makes a scratch database
     (SQLite: a file in bench/results/, dropped afterwards; PostgreSQL:
     `dunning_bench_simulate` on 127.0.0.1, dropped afterwards), migrates it and runs the
     whole simulation as `manage.py simulate` does: the book, the legacy model, every
     event through the real service on the test clock, convergence and the report;
  2. times the phases: the run through the service ("simulate", the figure that matters),
     the convergence check (a DRIFT_DETECTED recompute of every account), and the rest
     (book, legacy model, measuring); and the CPU seconds of the process and, on
     PostgreSQL, of its backend, read from /proc: on a shared 2-core machine the CPU per
     account-day barely moves when other work loads the machine, unlike wall time;
  3. before each size, projects its time from the previous size's rate; a size projected
     beyond --budget-seconds is not run, and the table says so;
  4. checks the growth is roughly linear: wall time per account-day at each size within
     0.67x-1.5x of the smallest size's;
  5. prints a table and writes bench/results/simulate.json.

All sizes use the same days (30 by default: every account renews once) and seed, and the
default behaviour mix.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as `python bench/simulate.py`, sys.path[0] is bench/; make the repo root importable
# instead (and do not let bench/*.py shadow top-level module names).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
PG_NAME = "dunning_bench_simulate"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
SQLITE_FILE = RESULTS / "simulate_bench.sqlite3"
LINEAR_BAND = (0.67, 1.5)
TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of a process, in seconds (None if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


# --------------------------------------------------------------------------- child


def child(database: str, accounts: int, days: int, seed: int) -> dict:
    """One run in this process, in a scratch database; returns its figures."""
    os.environ.pop("CELERY_BROKER_URL", None)  # in-process tasks, as on the embedded default
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        LOG_LEVEL="WARNING",
        SENTRY_DSN="",
        STRIPE_API_KEY="",
        DATABASE_URL=PG_URL if database == "postgresql" else f"sqlite:///{SQLITE_FILE}",
    )
    import django

    django.setup()
    from django.db import connection

    from simulation import simulate

    connection.settings_dict.setdefault("TEST", {})["NAME"] = (
        PG_NAME if database == "postgresql" else str(SQLITE_FILE)
    )
    original = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        backend = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend = cursor.fetchone()[0]
        backend_cpu = _proc_cpu(backend) if backend else None
        cpu, started = time.process_time(), time.perf_counter()
        report = simulate(accounts=accounts, days=days, seed=seed)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        if backend:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                same = cursor.fetchone()[0] == backend
            after = _proc_cpu(backend)
            backend_cpu = after - backend_cpu if same and after is not None else None
    finally:
        connection.creation.destroy_test_db(original, verbosity=0)
    seconds = report.pop("_seconds")
    service = report["service"]
    return {
        "database": database,
        "accounts": accounts,
        "days": days,
        "account_days": accounts * days,
        "seconds": {
            "total": round(wall, 2),
            "simulate": round(seconds["simulate"], 2),
            "converge": round(seconds["converge"], 2),
            "other": round(wall - seconds["simulate"] - seconds["converge"], 2),
        },
        "cpu_seconds": {
            "process": round(cpu, 2),
            "database_backend": round(backend_cpu, 2) if backend_cpu is not None else None,
        },
        "account_days_per_second": round(accounts * days / seconds["simulate"], 1),
        "deliveries": service["deliveries"]["delivered"],
        "retries": service["retries"],
        "lost_or_stuck": service["lost_or_stuck_total"],
        "disagree": service["disagree_after_convergence"],
    }


# --------------------------------------------------------------------------- parent


def run_child(database: str, accounts: int, days: int, seed: int) -> dict:
    load = os.getloadavg()[0]
    command = [sys.executable, __file__, "--child", database, str(accounts), str(days), str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"\nBENCH FAILED ({database}, {accounts}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average_before"] = round(load, 2)
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    return result


def growth(runs: list[dict]) -> dict:
    """Wall time (and CPU) per account-day relative to the smallest book run."""
    ordered = sorted(runs, key=lambda r: r["accounts"])
    base = ordered[0]

    def per_day(run: dict, key: str) -> float | None:
        if key == "wall":
            return run["seconds"]["simulate"] / run["account_days"]
        cpu = run["cpu_seconds"]["process"] + (run["cpu_seconds"]["database_backend"] or 0)
        return cpu / run["account_days"]

    rows = []
    for run in ordered:
        wall = per_day(run, "wall") / per_day(base, "wall")
        cpu = per_day(run, "cpu") / per_day(base, "cpu")
        rows.append(
            {"accounts": run["accounts"], "wall_ratio": round(wall, 2), "cpu_ratio": round(cpu, 2)}
        )
    low, high = LINEAR_BAND
    linear = all(low <= row["wall_ratio"] <= high for row in rows)
    return {"per_account_day_vs_smallest": rows, "roughly_linear": linear}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000,10000,100000")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--budget-seconds", type=float, default=900)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", nargs=4, metavar=("DB", "ACCOUNTS", "DAYS", "SEED"))
    args = parser.parse_args()
    if args.child:
        database, accounts, days, seed = args.child
        print(json.dumps(child(database, int(accounts), int(days), int(seed))))
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    sizes = [int(size) for size in args.sizes.split(",")]
    runs: list[dict] = []
    not_run: list[dict] = []
    for database in args.databases.split(","):
        rate = None
        for size in sizes:
            account_days = size * args.days
            if rate is not None:
                projected = account_days / rate
                if projected > args.budget_seconds:
                    not_run.append(
                        {
                            "database": database,
                            "accounts": size,
                            "projected_seconds": round(projected),
                            "why": f"projected {projected / 60:.0f} min at the "
                            f"{rate:.0f} account-days/s measured at the previous size, over "
                            f"the {args.budget_seconds / 60:.0f} min budget",
                        }
                    )
                    continue
            print(f"{database}: {size:,} accounts x {args.days} days ...", flush=True)
            result = run_child(database, size, args.days, args.seed)
            rate = result["account_days_per_second"]
            runs.append(result)
            print(
                f"  {rate:,.0f} account-days/s, {result['seconds']['simulate']:.0f} s "
                f"(+{result['seconds']['converge']:.0f} s convergence check), "
                f"load {result['load_average_before']}->{result['load_average_after']}",
                flush=True,
            )
    by_database = {}
    for database in args.databases.split(","):
        mine = [run for run in runs if run["database"] == database]
        if mine:
            by_database[database] = growth(mine)

    header = (
        f"{'database':10} {'accounts':>9} {'account-days':>12} {'simulate s':>10} "
        f"{'acct-days/s':>11} {'CPU ms/acct-day':>15} {'x per acct-day':>14} {'converge s':>10}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for run in runs:
        ratio = next(
            row["wall_ratio"]
            for row in by_database[run["database"]]["per_account_day_vs_smallest"]
            if row["accounts"] == run["accounts"]
        )
        cpu = run["cpu_seconds"]["process"] + (run["cpu_seconds"]["database_backend"] or 0)
        print(
            f"{run['database']:10} {run['accounts']:>9,} {run['account_days']:>12,} "
            f"{run['seconds']['simulate']:>10.1f} {run['account_days_per_second']:>11,.0f} "
            f"{1000 * cpu / run['account_days']:>15.2f} {ratio:>13.2f}x "
            f"{run['seconds']['converge']:>10.1f}"
        )
    for skipped in not_run:
        print(f"{skipped['database']:10} {skipped['accounts']:>9,}  not run: {skipped['why']}")
    for database, verdict in by_database.items():
        print(
            f"{database}: growth "
            + ("roughly linear" if verdict["roughly_linear"] else "NOT linear")
            + f" (wall time per account-day within {LINEAR_BAND[0]}x-{LINEAR_BAND[1]}x "
            "of the smallest book's)"
        )
    result = {
        "benchmark": "simulate",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "days": args.days,
        "seed": args.seed,
        "budget_seconds": args.budget_seconds,
        "runs": runs,
        "not_run": not_run,
        "growth": by_database,
    }
    (RESULTS / "simulate.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'simulate.json'}")


if __name__ == "__main__":
    main()
