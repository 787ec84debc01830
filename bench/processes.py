"""The processes of a benchmark: CPU from /proc (whole stack, one process, named process
trees, the backends of a database sampled during a measurement), the load average, and the
gunicorn and Celery worker starters. No Django import, so it loads in any process.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from bench.common import ADMIN_DSN, ROOT, BenchError

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
    sessions: dict[str, int] = field(default_factory=dict)

    @classmethod
    def take(cls, gunicorn_pid: int, postmaster: int | None, redis_pid: int | None):
        times = os.times()
        return cls(
            gunicorn=Tree.take(gunicorn_pid),
            postgres=Tree.take(postmaster),
            redis=Tree.take(redis_pid),
            client=times.children_user + times.children_system,
            machine=machine_busy(),
            sessions=sessions_begun(),
        )


def stack_cpu(before: StackSample, after: StackSample, db_name: str) -> dict[str, float]:
    """CPU seconds of each part of the stack between two samples."""
    gunicorn = sum(after.gunicorn.delta(before.gunicorn, lambda _: "worker").values())
    pg = postgres_cpu(before.postgres, after.postgres, db_name, sessions=(before, after))
    cpu = {
        "gunicorn": gunicorn,
        "postgres_backends": pg["backends"],
        "postgres_exited": pg["exited"],
        "postgres_aux": pg["aux"],
        "redis": sum(after.redis.delta(before.redis, lambda _: "thread").values()),
    }
    cpu["stack"] = sum(cpu.values())
    cpu["client"] = after.client - before.client
    # Not part of the stack: other databases' backends, live or exited.
    cpu["postgres_other_databases"] = pg["other_databases"]
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


def process_cpu_s(pid: int) -> float:
    """CPU seconds a process (all its threads) has used so far: schedstat's nanoseconds,
    else /proc/<pid>/stat's ticks; nan once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    stat = _stat(pid)
    return stat[1] / CLK_TCK if stat else float("nan")


class DuringMeasurement:
    """While the block runs, every SAMPLE_S: the 1-minute load average (the load printed is
    the one during the measurement), and the CPU of every PostgreSQL backend of `database`,
    so a backend opened and closed inside the block counts too. A backend that exits loses
    at most its last SAMPLE_S from the count (/proc keeps no trace of it)."""

    SAMPLE_S = 0.25

    def __init__(self, database: str) -> None:
        self.database = database
        self._ours: dict[int, bool] = {}  # pid -> a backend of the database (titles keep it)

    def __enter__(self) -> DuringMeasurement:
        self.samples = [load_average()]
        self.first = self._backends()
        self.last = dict(self.first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _backends(self) -> dict[int, float]:
        found = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid not in self._ours:
                title = _cmdline(pid).split()
                self._ours[pid] = title[:1] == ["postgres:"] and self.is_ours(title)
            if self._ours[pid] and not math.isnan(cpu := process_cpu_s(pid)):
                found[pid] = cpu
        return found

    def is_ours(self, title: list[str]) -> bool:
        """Whether a PostgreSQL backend, by its title's words ("postgres: [cluster:] user
        database host(port) state"), serves the measured database."""
        return self.database in title[2:4]

    def _sample(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            self.samples.append(load_average())
            for pid, cpu in self._backends().items():
                self.first.setdefault(pid, 0.0)  # started during the block: all of it
                self.last[pid] = cpu

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(load_average())
        self.last.update(self._backends())

    @property
    def backends_cpu_s(self) -> float:
        return sum(cpu - self.first[pid] for pid, cpu in self.last.items())


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


# --- CPU of named process trees (added for bench/e2e.py) ----------------------------------
def tree_cpu(before: Tree, after: Tree) -> float:
    """CPU seconds a process and its children (live, new, or exited in between) used
    between two looks."""
    return sum(after.delta(before, lambda _: "child").values())


def sessions_begun() -> dict[str, int]:
    """Sessions ever opened on each database (PostgreSQL's own counter, pg_stat_database,
    PostgreSQL 14 and later; flushed within a second). A backend that began and ended
    between two looks at /proc leaves no other trace of whose it was."""
    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT datname, sessions FROM pg_stat_database WHERE datname IS NOT NULL"
        ).fetchall()
    return {name: int(count) for name, count in rows}


def postgres_cpu(before: Tree, after: Tree, db_name: str, *, sessions=None) -> dict[str, float]:
    """The postmaster's tree between two looks: this database's backends, exited backends,
    the auxiliary processes, and other databases' backends. /proc cannot say whose an
    exited backend was: its CPU is counted as ours (an upper bound) when one of ours was
    among them, or when, by `sessions` (two samples with `sessions_begun()` readings), a
    session of ours began between the looks (one that began and ended in between is in
    no listing of children); else as another database's."""

    def kind(cmd: str) -> str:
        if f" {db_name} " in cmd:
            return "ours"
        return "other_db" if "(" in cmd or "[local]" in cmd else "aux"

    pg = after.delta(before, kind)
    gone = before.children.keys() - after.children.keys()
    ours_exited = any(kind(before.children[pid][1]) == "ours" for pid in gone)
    if sessions is not None:
        first, last = sessions
        ours_exited |= last.sessions.get(db_name, 0) > first.sessions.get(db_name, 0)
    return {
        "backends": pg.get("ours", 0.0),
        "exited": pg["exited"] if ours_exited else 0.0,
        "aux": pg["self"] + pg.get("aux", 0.0),
        "other_databases": pg.get("other_db", 0.0) + (0.0 if ours_exited else pg["exited"]),
    }


class CeleryWorker:
    """`celery -A config worker` as a subprocess in its own process group (stopped with
    the group, so its pool's children go too)."""

    def __init__(self, env: dict, log: Path, *args: str) -> None:
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", *args]
        command += ["--without-gossip", "--without-mingle", "-n", f"bench-{os.getpid()}@%h"]
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)
