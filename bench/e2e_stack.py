"""The real processes of bench/e2e.py and the CPU each of them uses.

gunicorn (sync workers) serving config.wsgi, a Celery worker (prefork, 2 processes) and
Celery beat, each in a process group of its own so that stopping one stops its children
too; the shared PostgreSQL and Redis servers, on the bench's own database and Redis db;
the fake Stripe (tests/fake_stripe.py) and a loopback Account Management (tests/http_peer.py),
both threads of the bench process, for the worker's calls out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import common, processes
from bench.common import BenchError
from bench.processes import Tree

ROOT = common.ROOT
NAMES = ("gunicorn", "worker", "beat")


class Stack:
    """gunicorn, worker and beat as subprocesses with one environment; logs under `logs`."""

    def __init__(self, env: dict[str, str], logs: Path, *, web_workers: int, port: int) -> None:
        self.env, self.logs, self.port = env, logs, port
        self.web_workers = web_workers
        self.procs: dict[str, subprocess.Popen] = {}

    def commands(self) -> dict[str, list[str]]:
        python = [sys.executable, "-m"]
        celery = [*python, "celery", "-A", "config"]
        return {
            "gunicorn": [
                *python,
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.web_workers),
                "--worker-class",
                "sync",  # production's worker class
                "--log-level",
                "warning",
            ],
            "worker": [*celery, "worker", "-P", "prefork", "-c", "2", "-l", "warning"],
            "beat": [*celery, "beat", "-l", "warning", "-s", str(self.logs / "beat-schedule")],
        }

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for name, command in self.commands().items():
            with (self.logs / f"{name}.log").open("wb") as log:
                self.procs[name] = subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as one
                )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """gunicorn answers /health/ (PostgreSQL and Redis reachable) and the worker has
        its two pool processes; the warm-up round then proves the whole path."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise BenchError(f"{name} exited with {proc.returncode}; see {self.logs}")
            pools = len(Tree.take(self.procs["worker"].pid).children)
            if pools >= 2 and len(Tree.take(self.procs["gunicorn"].pid).children) > 0:
                try:
                    url = f"http://127.0.0.1:{self.port}/health/"
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        if answer.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.2)
        raise BenchError(f"the stack was not ready within 60 s; see {self.logs}")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} died (exit {proc.returncode}); see {self.logs}")

    def errors_logged(self) -> dict[str, int]:
        """Lines at ERROR (or a traceback) each process logged during the run."""
        return {
            name: sum(
                1
                for line in (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
                if "ERROR" in line or line.startswith("Traceback")
            )
            for name in NAMES
        }

    def stop(self) -> None:
        """TERM each process group, then KILL what is left of it: nothing outlives the run."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.procs = {}


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (wrk, pgbench) so far."""
    times = os.times()
    return times.children_user + times.children_system


@dataclass
class Sample:
    """One look at every process of the stack, the bench process and its children (wrk,
    pgbench: reaped, so counted when they end), and the whole machine."""

    trees: dict[str, Tree]
    postgres: Tree
    redis: Tree
    bench: float
    clients: float
    machine: float
    at: float
    sessions: dict[str, int]

    @classmethod
    def take(cls, stack: Stack, postmaster: int | None, redis_pid: int | None) -> Sample:
        times = os.times()
        return cls(
            trees={name: Tree.take(stack.procs[name].pid) for name in NAMES},
            postgres=Tree.take(postmaster),
            redis=Tree.take(redis_pid),
            bench=times.user + times.system,
            clients=times.children_user + times.children_system,
            machine=processes.machine_busy(),
            at=time.monotonic(),
            sessions=processes.sessions_begun(),
        )


def cpu_between(before: Sample, after: Sample, db_name: str) -> dict[str, float]:
    """CPU seconds of each part between two samples; `stack` sums the service's processes
    (gunicorn, worker, beat, this database's PostgreSQL share, Redis)."""
    cpu = {name: processes.tree_cpu(before.trees[name], after.trees[name]) for name in NAMES}
    pg = processes.postgres_cpu(before.postgres, after.postgres, db_name, sessions=(before, after))
    cpu["postgres"] = pg["backends"] + pg["exited"] + pg["aux"]
    cpu["redis"] = processes.tree_cpu(before.redis, after.redis)
    cpu["stack"] = sum(cpu.values())
    # Outside the stack: the bench process (the fake Stripe and Account Management answer
    # in its threads; it also polls the database), wrk, other databases' backends.
    cpu["bench_and_fakes"] = after.bench - before.bench
    cpu["wrk"] = after.clients - before.clients
    cpu["postgres_other_databases"] = pg["other_databases"]
    cpu["machine"] = after.machine - before.machine
    cpu["wall"] = after.at - before.at
    return cpu
