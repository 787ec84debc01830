"""Pieces every benchmark shares: percentiles, a database of the bench's own, Redis
hygiene, the wrk client and the report's verdict. No Django import, so it loads in any
process; the Django-side set-up (migrate, check the schema) is bench/database.py, CPU
accounting and the gunicorn and worker starters are bench/processes.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class BenchError(SystemExit):
    """Abort loudly (non-zero exit) with a message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"\nBENCH FAILED: {message}")


# --- latency ----------------------------------------------------------------------------
# wrk reports each phase's latency at these percentiles; a side's pooled percentiles
# are read off the mixture of its phases, each weighted by its request count.
GRID = [p / 2 for p in range(1, 196)] + [98 + p / 10 for p in range(1, 20)] + [99.95, 100.0]
_SPANS = [(high - low) / 100 for low, high in zip([0.0, *GRID], GRID, strict=False)]


def pooled_percentile(phases: list[tuple[int, list[float]]], q: float) -> float:
    """q-th percentile of the union of phases given as (requests, values at GRID)."""
    points = sorted(
        (value, weight)
        for requests, values in phases
        for value, weight in zip(values, [requests * w for w in _SPANS], strict=True)
    )
    total = sum(weight for _, weight in points)
    running = 0.0
    for value, weight in points:
        running += weight
        if running >= q / 100 * total * (1 - 1e-9):
            return value
    return points[-1][0]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# --- the bench's own database and Redis db --------------------------------------------------
def admin(sql: str, params: list | None = None, *, admin_dsn: str = ADMIN_DSN) -> list[tuple]:
    """One statement on the server's `postgres` database, in autocommit (CREATE DATABASE)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def database_exists(db_name: str, *, admin_dsn: str = ADMIN_DSN) -> bool:
    found = admin("SELECT 1 FROM pg_database WHERE datname = %s", [db_name], admin_dsn=admin_dsn)
    return bool(found)


def create_database(db_name: str, *, drop_first: bool = False, admin_dsn: str = ADMIN_DSN) -> None:
    """The one way a bench makes its database: created if missing, dropped first if asked."""
    if drop_first:
        admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)', admin_dsn=admin_dsn)
    if not database_exists(db_name, admin_dsn=admin_dsn):
        admin(f'CREATE DATABASE "{db_name}"', admin_dsn=admin_dsn)
        print(f"created database {db_name}", flush=True)


class RedisKeys:
    """Remembers the keys of a Redis db at the start, and deletes only the keys that
    appeared since: the db may hold someone else's data, so never FLUSHDB."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.client.ping()
        self.before = set(self.client.scan_iter(count=1000))

    def new_keys(self) -> set[bytes]:
        return set(self.client.scan_iter(count=1000)) - self.before

    def clean_up(self) -> int:
        new = self.new_keys()
        return self.client.delete(*new) if new else 0


# --- the load generator ---------------------------------------------------------------------
def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not installed. It is the out-of-process load generator this bench uses:\n"
            "    apt-get install -y wrk      (Debian/Ubuntu package `wrk`, 4.1)"
        )
    return path


def run_wrk(lua: Path, url: str, seconds: int, connections: int, threads: int, *args) -> dict:
    """One timed wrk run; the WRK_RESULT line its Lua script's done() printed."""
    command = [wrk_binary(), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    command += ["--timeout", "10s", "-s", str(lua), url, "--", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    for line in done.stdout.splitlines():
        if done.returncode == 0 and line.startswith("WRK_RESULT "):
            return json.loads(line.removeprefix("WRK_RESULT "))
    raise BenchError(f"wrk exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")


def summarize(phases: list[dict]) -> dict:
    """One side's phases: req/s, pooled latency, CPU ms per request of each part."""
    requests = sum(p["wrk"]["requests"] for p in phases)
    seconds = sum(p["wrk"]["duration_us"] for p in phases) / 1e6
    lat = [(p["wrk"]["requests"], [v / 1000 for v in p["wrk"]["latency_us"]]) for p in phases]
    cpu = {k: sum(p["cpu"][k] for p in phases) / requests * 1000 for k in phases[0]["cpu"]}
    # The share of all CPUs busy with processes outside the stack and the client.
    other = max(0.0, cpu["machine"] - cpu["stack"] - cpu["client"]) * requests / 1000
    return {
        "requests": requests,
        "rps": round(requests / seconds, 1),
        "phase_rps": [
            round(p["wrk"]["requests"] / p["wrk"]["duration_us"] * 1e6, 1) for p in phases
        ],
        "p50_ms": round(pooled_percentile(lat, 50), 2),
        "p99_ms": round(pooled_percentile(lat, 99), 2),
        "worst_phase_p99_ms": round(max(pooled_percentile([x], 99) for x in lat), 2),
        "cpu_ms_per_request": {k: round(v, 3) for k, v in cpu.items()},
        "other_cpu_share": round(other / (seconds * (os.cpu_count() or 1)), 3),
    }


def percentile(values: list[float], q: float) -> float:
    """q-th percentile of a list of values (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --- in-process Django benches (recompute, retry dispatch) ----------------------------------
def django_bench(db_name: str, **env: str) -> None:
    """Make the repo root importable (a bench runs as `python bench/x.py`, so sys.path[0]
    is bench/), point Django at the bench's own database and set it up."""
    if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
        sys.path[0] = str(ROOT)
    elif str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db_name}",
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="false",
        DUNNING_TEST_CLOCK="false",
        STRIPE_API_KEY="",
        ACCOUNT_MANAGEMENT_URL="",
        SENTRY_DSN="",
        LOG_LEVEL="WARNING",
        EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
    )
    os.environ.update(env)
    import django

    django.setup()


def verdict(measured: float, goal: float, floor: float, *, higher_is_better: bool) -> str:
    """'goal PASS, floor PASS' style: the goal is the verdict, the floor said apart."""

    def ok(limit: float) -> str:
        met = measured >= limit if higher_is_better else measured <= limit
        return "PASS" if met else "FAIL"

    sign = ">=" if higher_is_better else "<="
    return f"goal {sign} {goal:g}x {ok(goal)}, floor {sign} {floor:g}x {ok(floor)}"


def wait_until(condition, *, timeout: float, what: str, alive=lambda: True) -> float:
    """Poll `condition` every 2 ms; the seconds it took. Aborts on timeout or when
    `alive()` turns false (a worker died)."""
    started = time.perf_counter()
    while not condition():
        if not alive():
            raise BenchError(f"the worker died while waiting for {what}")
        if time.perf_counter() - started > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.002)
    return time.perf_counter() - started
