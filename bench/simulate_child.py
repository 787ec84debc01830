"""One run of the simulator in this process, in a scratch database: what
`bench/simulate.py --child` runs in each subprocess, and the figures it returns. With
`workers`, the service's run is sharded (`simulate --workers N`) over that many Celery
worker processes started here on the bench's own Redis db, each shard in a scratch
database next to the bench's; the CPU is then the workers' and their backends'.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

PG_NAME = os.environ.get("BENCH_SIMULATE_DATABASE", "sim_bench_simulate")
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
SQLITE_FILE = RESULTS / "simulate_bench.sqlite3"
REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('BENCH_SIMULATE_REDIS_DB', '12'))}"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.processes import DuringMeasurement, process_cpu_s  # noqa: E402

# --------------------------------------------------------------------------- child


def _environment(database: str) -> None:
    os.environ.pop("CELERY_BROKER_URL", None)  # in-process tasks, as on the embedded default
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        LOG_LEVEL="WARNING",
        SENTRY_DSN="",
        STRIPE_API_KEY="",
        DATABASE_URL=PG_URL if database == "postgresql" else f"sqlite:///{SQLITE_FILE}",
    )


def child(database: str, accounts: int, days: int, seed: int, workers: int = 0) -> dict:
    """One run in this process, in a scratch database (or sharded); returns its figures."""
    _environment(database)
    if workers:
        return sharded_child(database, accounts, days, seed, workers)
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
        backend_cpu = process_cpu_s(backend) if backend else None
        cpu, started = time.process_time(), time.perf_counter()
        report = simulate(accounts=accounts, days=days, seed=seed)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        if backend:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                same = cursor.fetchone()[0] == backend
            after = process_cpu_s(backend)
            backend_cpu = after - backend_cpu if same and not math.isnan(after) else None
    finally:
        connection.creation.destroy_test_db(original, verbosity=0)
    return figures(database, accounts, days, report, wall, cpu, backend_cpu)


def figures(
    database: str,
    accounts: int,
    days: int,
    report: dict,
    wall: float,
    cpu: float,
    backend_cpu: float | None,
    workers: int = 0,
) -> dict:
    seconds = report.pop("_seconds")
    service = report["service"]
    return {
        "database": database,
        "workers": workers,
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


# --------------------------------------------------------------------------- sharded


def _start_workers(count: int) -> list[tuple[subprocess.Popen, Path]]:
    """`count` shard workers (queue `simulation`, one task at a time), ready to take work."""
    import redis

    # Shards a killed run left behind: queued, or taken and never acknowledged (kombu's
    # unacked hash, restored to the queue later). This Redis db is the bench's own.
    redis.Redis.from_url(REDIS_URL).delete("simulation", "unacked", "unacked_index")
    env = {**os.environ, "CELERY_BROKER_URL": REDIS_URL, "CELERY_TASK_ALWAYS_EAGER": "false"}
    started = []
    for n in range(count):
        log = RESULTS / f"simulate_worker{n}.log"
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "simulation"]
        command += ["--pool", "solo", "--without-gossip", "--without-mingle", "-l", "info"]
        command += ["-n", f"simulate{n}-{os.getpid()}@%h"]
        with log.open("w") as out:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append((proc, log))
    deadline = time.monotonic() + 120
    while not all(" ready." in log.read_text() for _, log in started):
        if time.monotonic() > deadline or any(p.poll() is not None for p, _ in started):
            _stop(started)
            raise SystemExit("the shard workers did not start; see bench/results/*.log")
        time.sleep(0.2)
    return started


def _stop(workers: list[tuple[subprocess.Popen, Path]]) -> None:
    for proc, _ in workers:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
    for proc, _ in workers:
        proc.wait(timeout=60)


class ShardBackends(DuringMeasurement):
    """The CPU of the PostgreSQL backends of the shards' scratch databases, sampled while
    the run goes: DuringMeasurement's, matching the databases by their names' prefix."""

    def is_ours(self, title: list[str]) -> bool:
        return any(word.startswith(self.database) for word in title[2:4])


def sharded_child(database: str, accounts: int, days: int, seed: int, workers: int) -> dict:
    """The run sharded over `workers` worker processes; this process only coordinates."""
    started_workers = _start_workers(workers)
    os.environ.update(CELERY_BROKER_URL=REDIS_URL, CELERY_TASK_ALWAYS_EAGER="false")
    try:
        import django

        django.setup()
        from simulation import simulate

        pids = [proc.pid for proc, _ in started_workers]
        before = [process_cpu_s(pid) for pid in pids]
        cpu, started = time.process_time(), time.perf_counter()
        with ShardBackends(f"{PG_NAME}_simulation_s") as during:
            report = simulate(accounts=accounts, days=days, seed=seed, workers=workers)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        cpu += sum(process_cpu_s(pid) - first for pid, first in zip(pids, before, strict=True))
        backend_cpu = during.backends_cpu_s if database == "postgresql" else None
    finally:
        _stop(started_workers)
    return figures(database, accounts, days, report, wall, cpu, backend_cpu, workers)
