"""The fault suite's processes: its own PostgreSQL and Redis (`Services`), the web,
worker and beat processes of the service under test (`Processes`), and their ports."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_PORT, REDIS_PORT, WEB_PORT = 55432, 56379, 58000
SECRET = "whsec_chaos"
BIN = Path(sys.executable).parent
SETTLE_TIMEOUT = 240.0
# Set on SIGTERM/SIGINT so the sender threads stop retrying and cleanup is not kept waiting.
STOPPING = threading.Event()


def say(message: str) -> None:
    """A progress line, flushed at once: a run killed from outside still shows what it did."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def listening(*ports: int) -> list[int]:
    """The ports among these that something already listens on (a leftover of an earlier run)."""
    busy = []
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise SystemExit(f"no {name} under /usr/lib/postgresql/*/bin")
    return str(found[-1])


def as_postgres(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, **kwargs)


class Services:
    """PostgreSQL and Redis of our own: own ports, own data directories, removed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pgdata = tmp / "pg"
        self.redis: subprocess.Popen | None = None

    def start(self) -> None:
        self.pgdata.mkdir()
        shutil.chown(self.tmp, "postgres")
        shutil.chown(self.pgdata, "postgres")
        as_postgres(
            pg_bin("initdb"), "-D", str(self.pgdata), "-A", "trust", stdout=subprocess.DEVNULL
        )
        self.start_pg()
        self.start_redis()

    def start_pg(self) -> None:
        opts = f"-p {PG_PORT} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        as_postgres(
            pg_bin("pg_ctl"),
            "-D",
            str(self.pgdata),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "-l",
            str(self.tmp / "pg.log"),
            "start",
            stdout=subprocess.DEVNULL,
        )

    def restart_pg(self) -> None:
        as_postgres(
            pg_bin("pg_ctl"),
            "-D",
            str(self.pgdata),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "stop",
            stdout=subprocess.DEVNULL,
        )
        time.sleep(3)
        self.start_pg()

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(REDIS_PORT),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=open(self.tmp / "redis.log", "ab"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not listening(REDIS_PORT) and time.monotonic() < deadline:
            time.sleep(0.1)

    def kill_redis(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.redis.pid, signal.SIGKILL)
            self.redis.wait(timeout=10)
            self.redis = None

    def stop(self) -> None:
        self.kill_redis()
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                pg_bin("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                "stop",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


class Processes:
    """gunicorn, a prefork worker (2 processes) and beat on one database."""

    def __init__(self, env: dict, tmp: Path) -> None:
        self.env, self.tmp, self.procs = env, tmp, {}

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            args,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, *names: str) -> None:
        commands = {
            "web": [
                str(BIN / "gunicorn"),
                "config.wsgi",
                "-b",
                f"127.0.0.1:{WEB_PORT}",
                "-w",
                "2",
                "--timeout",
                "30",
            ],
            "worker": [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "-c",
                "2",
                "-P",
                "prefork",
                "-l",
                "warning",
            ],
            "beat": [
                str(BIN / "celery"),
                "-A",
                "config",
                "beat",
                "-l",
                "warning",
                "-s",
                str(self.tmp / "beat-schedule"),
            ],
        }
        for name in names or commands:
            self._spawn(name, commands[name])

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        """TERM each process group, then KILL whatever of the group is left (prefork children
        and gunicorn workers included), so nothing outlives the run."""
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.procs = {}
