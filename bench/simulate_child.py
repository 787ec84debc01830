"""One run of the simulator in this process, in a scratch database: what
`bench/simulate.py --child` runs in each subprocess, and the figures it returns.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

PG_NAME = "sim_bench_simulate"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
SQLITE_FILE = RESULTS / "simulate_bench.sqlite3"
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
        "events": service["deliveries"]["events_created"],
        "events_per_second": round(
            service["deliveries"]["events_created"] / seconds["simulate"], 1
        ),
        "deliveries": service["deliveries"]["delivered"],
        "retries": service["retries"],
        "lost_or_stuck": service["lost_or_stuck_total"],
        "disagree": service["disagree_after_convergence"],
    }
