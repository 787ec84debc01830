"""Pieces the out-of-process benchmarks share: whole-stack CPU from /proc, the load
average, pooled latency percentiles, a database of the bench's own, Redis hygiene and
the wrk client. Used by bench/ingest.py; no Django import, so it loads in any process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(SystemExit):
    """Abort loudly (non-zero exit) with a message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"\nBENCH FAILED: {message}")


# --- CPU of every process of the stack -----------------------------------------------------
def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, own utime+stime, reaped children's cutime+cstime) in ticks, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


@dataclass
class Tree:
    """One process and its children at one moment. A child that exits is reaped into the
    parent's cutime/cstime with its whole life's CPU, so `delta` takes back what it had
    used before the first look: nothing that ran during the interval is lost."""

    own: int = 0
    reaped: int = 0
    children: dict[int, tuple[int, str]] = field(default_factory=dict)

    @classmethod
    def take(cls, root: int | None) -> Tree:
        if root is None or (stat := _stat(root)) is None:
            return cls()
        children = {}
        try:
            listing = Path(f"/proc/{root}/task/{root}/children").read_text().split()
        except OSError:
            listing = []
        for pid in map(int, listing):
            if (child := _stat(pid)) is not None:
                children[pid] = (child[1] + child[2], _cmdline(pid))
        return cls(own=stat[1], reaped=stat[2], children=children)

    def delta(self, before: Tree, kind) -> dict[str, float]:
        """CPU seconds since `before`, by kind(cmdline) of child; 'exited' for children
        that ended in between (any kind: /proc cannot tell whose they were)."""
        out: dict[str, float] = {"self": (self.own - before.own) / CLK_TCK}
        gone = sum(cpu for pid, (cpu, _) in before.children.items() if pid not in self.children)
        out["exited"] = max(0, self.reaped - before.reaped - gone) / CLK_TCK
        for pid, (cpu, cmd) in self.children.items():
            name = kind(cmd)
            out[name] = out.get(name, 0.0) + (cpu - before.children.get(pid, (0, ""))[0]) / CLK_TCK
        return out


def machine_busy() -> float:
    """CPU seconds all CPUs spent running anything since boot (user+nice+system+steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + steal) / CLK_TCK


@dataclass
class StackSample:
    """Everything the measured stack runs: gunicorn (master and workers, live or
    exited), PostgreSQL (the postmaster's children: this database's backends, its
    auxiliary processes, and backends that exited mid-phase), redis-server, and the
    load generator (a child of this process, reaped when it ends)."""

    gunicorn: Tree
    postgres: Tree
    redis: Tree
    client: float
    machine: float

    @classmethod
    def take(cls, gunicorn_pid: int, postmaster: int | None, redis_pid: int | None):
        times = os.times()
        return cls(
            gunicorn=Tree.take(gunicorn_pid),
            postgres=Tree.take(postmaster),
            redis=Tree.take(redis_pid),
            client=times.children_user + times.children_system,
            machine=machine_busy(),
        )


def stack_cpu(before: StackSample, after: StackSample, db_name: str) -> dict[str, float]:
    """CPU seconds of each part of the stack between two samples."""

    def pg_kind(cmd: str) -> str:
        if f" {db_name} " in cmd:
            return "ours"
        # A client backend reads "postgres: <cluster>: <user> <database> <host> <state>";
        # the auxiliary processes (walwriter, checkpointer ...) have no host part.
        return "other_db" if "(" in cmd or "[local]" in cmd else "aux"

    gunicorn = sum(after.gunicorn.delta(before.gunicorn, lambda _: "worker").values())
    pg = after.postgres.delta(before.postgres, pg_kind)
    # Backends that exited are only seen as the postmaster's reaped total, whatever their
    # database: counted in the stack (an upper bound) when one of ours was among them.
    gone = before.postgres.children.keys() - after.postgres.children.keys()
    ours_exited = any(pg_kind(before.postgres.children[pid][1]) == "ours" for pid in gone)
    cpu = {
        "gunicorn": gunicorn,
        "postgres_backends": pg.get("ours", 0.0),
        "postgres_exited": pg["exited"] if ours_exited else 0.0,
        "postgres_aux": pg["self"] + pg.get("aux", 0.0),
        "redis": sum(after.redis.delta(before.redis, lambda _: "thread").values()),
    }
    cpu["stack"] = sum(cpu.values())
    cpu["client"] = after.client - before.client
    # Not part of the stack: other databases' backends, live or exited.
    cpu["postgres_other_databases"] = pg.get("other_db", 0.0) + (
        0.0 if ours_exited else pg["exited"]
    )
    cpu["machine"] = after.machine - before.machine
    return cpu


def stack_pids(dsn: str, redis_url: str) -> tuple[int | None, int | None]:
    """The postmaster's and redis-server's pids; None for one whose processes this /proc
    cannot see (a server in another container): its CPU then goes uncounted."""
    with psycopg.connect(dsn) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        stat = _stat(backend)
    redis_pid = redis.Redis.from_url(redis_url).info("server")["process_id"]
    return (stat[0] if stat else None), (redis_pid if _stat(redis_pid) else None)


def load_average() -> float:
    """The 1-minute load average now."""
    return float(Path("/proc/loadavg").read_text().split()[0])


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
def create_database(db_name: str, *, drop_first: bool = False) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        if drop_first:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone():
            conn.execute(f'CREATE DATABASE "{db_name}"')
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict, port: int, workers: int, threads: int, worker_class: str, log: Path):
    """gunicorn serving config.wsgi, ready once every worker is. `threads` applies to
    gthread (keep-alive); sync workers answer one connection each, then close it."""
    command = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind"]
    command += [f"127.0.0.1:{port}", "--workers", str(workers), "--worker-class", worker_class]
    command += ["--threads", str(threads if worker_class == "gthread" else 1)]
    command += ["--keep-alive", "30", "--log-level", "warning"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(300):
        if proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {proc.returncode}; see {log}")
        if len(Tree.take(proc.pid).children) >= workers:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/ping/", timeout=2)
                return proc
            except OSError:
                pass
        time.sleep(0.1)
    proc.terminate()
    raise BenchError("gunicorn did not answer within 30 s")


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


# --- CPU of named process trees (added for bench/e2e.py) ----------------------------------
def tree_cpu(before: Tree, after: Tree) -> float:
    """CPU seconds a process and its children (live, new, or exited in between) used
    between two looks."""
    return sum(after.delta(before, lambda _: "child").values())


def postgres_cpu(before: Tree, after: Tree, db_name: str) -> dict[str, float]:
    """The postmaster's tree between two looks, split as `stack_cpu` splits it: this
    database's backends, exited backends (counted as ours, an upper bound, when one of
    ours was among them), the auxiliary processes, and other databases' backends."""

    def kind(cmd: str) -> str:
        if f" {db_name} " in cmd:
            return "ours"
        return "other_db" if "(" in cmd or "[local]" in cmd else "aux"

    pg = after.delta(before, kind)
    gone = before.children.keys() - after.children.keys()
    ours_exited = any(kind(before.children[pid][1]) == "ours" for pid in gone)
    return {
        "backends": pg.get("ours", 0.0),
        "exited": pg["exited"] if ours_exited else 0.0,
        "aux": pg["self"] + pg.get("aux", 0.0),
        "other_databases": pg.get("other_db", 0.0) + (0.0 if ours_exited else pg["exited"]),
    }


def percentile(values: list[float], q: float) -> float:
    """q-th percentile of a list of values (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
