#!/usr/bin/env python
"""Benchmark: Stripe webhook ingest vs. a one-INSERT baseline, same gunicorn server.

    .venv/bin/python bench/ingest.py [--requests N] [--concurrency C]

What it does, end to end:
  1. creates the PostgreSQL database `dunning_bench` if missing, runs `manage.py migrate`
     against it, creates the baseline table and empties both measured tables;
  2. starts gunicorn (`config.wsgi:application` with DJANGO_SETTINGS_MODULE=bench.settings,
     2 workers) on a free loopback port, against the real Redis broker (db 14);
  3. pre-generates one distinct signed `invoice.payment_failed` event per request;
  4. warms both endpoints up, then measures them in ABBA-ordered rounds
     (baseline, ingest, ingest, baseline, ...) so drift hits both alike;
  5. checks every response was a 200, every event row exists (and every Celery
     message was published), prints the table, writes bench/results/ingest.json,
     stops gunicorn and flushes Redis db 14.

Both endpoints go through the same server, the same middleware and the same client;
the baseline (`bench.views.baseline_insert`) reads the same body and does one INSERT.
gthread (2 workers x 4 threads, keep-alive) is the default because it was the fastest
for both endpoints here (sync workers close the connection after every response).

Besides req/s and latency it reports CPU per request of the gunicorn workers, the
PostgreSQL backends and Redis, read from /proc: on a 2-CPU machine shared with the
client those are the costs that set the throughput, and unlike req/s they barely
move when other processes load the machine (the run warns when that happens).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as `python bench/ingest.py`, sys.path[0] is bench/; make the repo root importable
# instead (and do not let bench/*.py shadow top-level module names).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

from billing_events import samples  # noqa: E402  (no Django needed: pure builders)

DB_NAME = "dunning_bench"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER_URL = "redis://127.0.0.1:6379/14"
CELERY_QUEUE = "celery"  # the default queue: no worker runs, so messages pile up here
SECRET = "whsec_bench_0123456789abcdef"
RESULTS = ROOT / "bench" / "results"

WEBHOOK_PATH = "/webhooks/stripe/"
BASELINE_PATH = "/bench/insert/"

TARGET_RATIO = 0.70
TARGET_P99_MS = 50.0
OTHER_CPU_WARN = 0.10  # warn when processes outside the benchmark take >10% of the CPUs

# Hard bounds so a broken server can never hang the run.
REQUEST_TIMEOUT_S = 10.0
PHASE_TIMEOUT_S = 90.0
RUN_BUDGET_S = 240.0  # signed timestamps must stay inside Stripe's 300 s tolerance


class BenchError(SystemExit):
    """Abort loudly (non-zero exit) with a message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"\nBENCH FAILED: {message}")


# --------------------------------------------------------------------------- setup


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DJANGO_DEBUG="false",
        DATABASE_URL=DATABASE_URL,
        DATABASE_CONN_MAX_AGE="60",
        STRIPE_WEBHOOK_SECRET=SECRET,
        CELERY_BROKER_URL=BROKER_URL,
        CELERY_TASK_ALWAYS_EAGER="false",
        DUNNING_TEST_CLOCK="false",  # the test clock costs a query per request
        SENTRY_DSN="",
        LOG_LEVEL="INFO",  # production's level; the happy path logs nothing
        PYTHONUNBUFFERED="1",
    )
    return env


def _migrate() -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _create_database(*, drop_first: bool) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        if drop_first:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            print(f"created database {DB_NAME}", flush=True)


def setup_database(*, fresh: bool = False) -> None:
    """Create (or with fresh=True recreate) the bench database and migrate it.

    If migrate fails on an existing database (a migration was edited in place since it
    was applied), the database is only benchmark data: drop it and migrate from scratch.
    """
    _create_database(drop_first=fresh)
    migrate = _migrate()
    if migrate.returncode != 0 and not fresh:
        print(f"migrate failed on the existing {DB_NAME}: recreating it", flush=True)
        _create_database(drop_first=True)
        migrate = _migrate()
    if migrate.returncode != 0:
        raise BenchError(f"manage.py migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_baseline ("
            " id bigserial PRIMARY KEY,"
            " body_bytes integer NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        # Same starting point every run: both measured tables empty.
        conn.execute(
            "TRUNCATE bench_baseline, billing_events_webhookevent RESTART IDENTITY CASCADE"
        )
        conn.execute("VACUUM ANALYZE bench_baseline")
        conn.execute("VACUUM ANALYZE billing_events_webhookevent")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> int:
    """utime+stime of a whole process (all its threads), in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _machine_busy() -> int:
    """Ticks all CPUs spent running processes since boot: user+nice+system+steal.

    Interrupt and softirq time is left out: here it is mostly the loopback traffic of
    the benchmark itself and is charged to no process. guest time is already in user.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + steal


def _scan_pids() -> tuple[list[int], list[int]]:
    """PostgreSQL backends serving the bench database, and redis-server."""
    backends, redis_servers = [], []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"postgres:") and f" {DB_NAME} ".encode() in cmdline:
            backends.append(int(entry.name))
        elif cmdline.startswith(b"redis-server"):
            redis_servers.append(int(entry.name))
    return backends, redis_servers


@dataclass
class CpuSample:
    """CPU seconds used by each part of the stack (and the whole machine) so far."""

    machine: float
    workers: float
    postgres: float
    redis: float
    client: float

    @classmethod
    def take(cls, server: Server) -> CpuSample:
        backends, redis_servers = _scan_pids()
        return cls(
            machine=_machine_busy() / CLK_TCK,
            workers=sum(_proc_cpu(pid) for pid in server.worker_pids()) / CLK_TCK,
            postgres=sum(_proc_cpu(pid) for pid in backends) / CLK_TCK,
            redis=sum(_proc_cpu(pid) for pid in redis_servers) / CLK_TCK,
            client=time.process_time(),
        )

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(*(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def worker_pids(self) -> list[int]:
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(args: argparse.Namespace) -> Server:
    RESULTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = RESULTS / "ingest_gunicorn.log"
    log_file = log_path.open("w")
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--chdir",
        str(ROOT),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--worker-class",
        args.worker_class,
        "--threads",
        str(args.threads),
        "--keep-alive",
        "30",
        "--timeout",
        "30",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=server_env(), stdout=log_file, stderr=subprocess.STDOUT
    )
    log_file.close()
    server = Server(proc=proc, port=port, log_path=log_path)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/bench/ping/")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise BenchError(f"gunicorn did not answer within 30 s:\n{server.log_tail()}")
        time.sleep(0.1)
    # Wait until every worker has booted, so no phase pays for a worker's imports.
    while len(server.worker_pids()) < args.workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return server


# --------------------------------------------------------------------------- payloads


def make_requests(count: int, *, tag: str, offset: int, now: int) -> list[tuple[bytes, str]]:
    """Distinct signed invoice.payment_failed events, ids evt_bench_<tag>_<n>."""
    built = []
    for n in range(offset, offset + count):
        customer = f"cus_bench{n % 997:06d}"
        invoice = samples.invoice(
            id=f"in_bench_{tag}_{n:07d}",
            customer=customer,
            created=now - 3600,
            attempt_count=1,
            subscription=f"sub_bench{n % 997:06d}",
            next_payment_attempt=now + 3 * 86400,
        )
        event = samples.event(
            "invoice.payment_failed", invoice, created=now, id=f"evt_bench_{tag}_{n:07d}"
        )
        built.append(samples.signed(event, secret=SECRET, timestamp=now))
    return built


# --------------------------------------------------------------------------- load


@dataclass
class Phase:
    endpoint: str
    label: str
    requests: int
    seconds: float
    latencies: list[float]
    cpu: CpuSample
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_phase(
    server: Server,
    endpoint: str,
    label: str,
    bodies: list[tuple[bytes, str]],
    concurrency: int,
) -> Phase:
    path = WEBHOOK_PATH if endpoint == "ingest" else BASELINE_PATH
    n = len(bodies)
    latencies = [0.0] * n
    statuses = [0] * n
    errors: list[str] = []
    counter = itertools.count()  # next() on a count is atomic under the GIL
    ready = threading.Barrier(concurrency + 1)
    hard_deadline = time.perf_counter() + PHASE_TIMEOUT_S

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.connect()
            ready.wait()
            while (i := next(counter)) < n:
                if time.perf_counter() > hard_deadline:
                    errors.append(f"phase exceeded {PHASE_TIMEOUT_S:.0f} s")
                    return
                body, signature = bodies[i]
                headers = {
                    "Content-Type": "application/json",
                    "Stripe-Signature": signature,  # ignored by the baseline; same size
                }
                started = time.perf_counter()
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                content = response.read()
                latencies[i] = time.perf_counter() - started
                statuses[i] = response.status
                if response.status != 200 and len(errors) < 5:
                    errors.append(f"HTTP {response.status}: {content[:300]!r}")
        except threading.BrokenBarrierError:
            return
        except Exception as error:  # noqa: BLE001 - reported, then the run aborts
            errors.append(f"{type(error).__name__}: {error}")
            ready.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu_before = CpuSample.take(server)
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait(timeout=REQUEST_TIMEOUT_S)
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=PHASE_TIMEOUT_S + REQUEST_TIMEOUT_S)
    seconds = time.perf_counter() - started
    cpu = CpuSample.take(server) - cpu_before
    if any(thread.is_alive() for thread in threads):
        errors.append("client threads did not finish")
    bad = sum(1 for status in statuses if status != 200)
    if bad:
        errors.insert(0, f"{bad} of {n} responses were not 200")
    return Phase(endpoint, label, n, seconds, latencies, cpu, errors)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def summarize(phases: list[Phase]) -> dict:
    lat = sorted(x for phase in phases for x in phase.latencies)
    requests = sum(phase.requests for phase in phases)
    seconds = sum(phase.seconds for phase in phases)

    def cpu_ms(part: str) -> float:
        return round(sum(getattr(phase.cpu, part) for phase in phases) / requests * 1000, 3)

    workers, postgres, redis_ms, client = (
        cpu_ms("workers"),
        cpu_ms("postgres"),
        cpu_ms("redis"),
        cpu_ms("client"),
    )
    machine = cpu_ms("machine")
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p90_ms": round(percentile(lat, 90) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2),
        # CPU per request, by process: a throughput-independent view of the cost.
        "cpu_ms_per_request": {
            "gunicorn_workers": workers,
            "postgres_backends": postgres,
            "redis": redis_ms,
            "server_stack": round(workers + postgres + redis_ms, 3),
            "client": client,
            # tick granularity can make this slightly negative on an idle machine
            "other_processes": round(machine - workers - postgres - redis_ms - client, 3),
        },
        # Share of the machine's CPUs busy with processes outside this benchmark
        # (kernel softirq for loopback and PostgreSQL's own background writers included).
        "other_cpu_share": round(
            max(0.0, machine - workers - postgres - redis_ms - client)
            * requests
            / 1000
            / (seconds * (os.cpu_count() or 1)),
            3,
        ),
        "phase_rps": [round(phase.rate, 1) for phase in phases],
    }


# --------------------------------------------------------------------------- checks


def check_phase(server: Server, phase: Phase) -> None:
    if phase.errors:
        raise BenchError(
            f"{phase.endpoint} {phase.label}: "
            + "; ".join(phase.errors)
            + f"\n--- gunicorn log tail ---\n{server.log_tail()}"
            + "\n(a schema error in the log? re-run with --fresh-db)"
        )


def verify_storage(tag: str, ingest_sent: int, baseline_sent: int, broker: redis.Redis) -> dict:
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        events, received = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'received'"
            " AND next_attempt_at IS NOT NULL)"
            " FROM billing_events_webhookevent WHERE stripe_event_id LIKE %s",
            [f"evt_bench_{tag}_%"],
        ).fetchone()
        baseline_rows = conn.execute("SELECT count(*) FROM bench_baseline").fetchone()[0]
    queued = broker.llen(CELERY_QUEUE)
    found = {
        "webhook_event_rows": events,
        "webhook_event_rows_received_and_due": received,
        "baseline_rows": baseline_rows,
        "celery_messages_queued": queued,
    }
    problems = []
    if events != ingest_sent:
        problems.append(f"{events} webhook event rows, expected {ingest_sent}")
    if received != ingest_sent:
        problems.append(f"{received} rows in status received, expected {ingest_sent}")
    if baseline_rows != baseline_sent:
        problems.append(f"{baseline_rows} baseline rows, expected {baseline_sent}")
    # The request does no broker I/O: the event pump hands due rows to workers.
    if queued != 0:
        problems.append(f"{queued} Celery messages in redis db 14, expected none")
    if problems:
        raise BenchError("storage check failed: " + "; ".join(problems))
    return found


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per endpoint")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests per endpoint")
    parser.add_argument("--rounds", type=int, default=8, help="ABBA rounds the requests split into")
    parser.add_argument(
        "--fresh-db", action="store_true", help=f"drop and recreate {DB_NAME} before migrating"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="gthread", choices=["sync", "gthread"])
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    args = parser.parse_args()
    if args.requests < args.rounds or args.concurrency < 1 or args.rounds < 1:
        parser.error("need --requests >= --rounds >= 1 and --concurrency >= 1")
    if args.worker_class == "sync":
        args.threads = 1
    return args


def main() -> None:
    args = parse_args()
    run_started = time.monotonic()
    tag = time.strftime("%H%M%S") + f"{os.getpid() % 1000:03d}"
    broker = redis.Redis.from_url(BROKER_URL)
    broker.ping()
    broker.flushdb()

    print(f"setting up {DATABASE_URL} ...", flush=True)
    setup_database(fresh=args.fresh_db)
    server = start_server(args)
    print(
        f"gunicorn on 127.0.0.1:{server.port}: {args.workers} workers, {args.worker_class}"
        + (f", {args.threads} threads each" if args.worker_class == "gthread" else "")
        + f"; client: {args.concurrency} threads, http.client keep-alive",
        flush=True,
    )
    try:
        signed_at = int(time.time())
        total = args.warmup + args.requests
        gen_started = time.perf_counter()
        ingest_bodies = make_requests(total, tag=tag, offset=0, now=signed_at)
        # The baseline gets different bodies of the same shape and size (unsigned use).
        baseline_bodies = make_requests(total, tag=tag + "b", offset=0, now=signed_at)
        sizes = sorted(len(body) for body, _ in ingest_bodies)
        print(
            f"pre-generated {2 * total} signed events in {time.perf_counter() - gen_started:.1f} s"
            f" (body {sizes[0]}-{sizes[-1]} bytes)",
            flush=True,
        )

        def slices(bodies: list) -> list[list]:
            measured = bodies[args.warmup :]
            step = len(measured) / args.rounds
            return [measured[round(r * step) : round((r + 1) * step)] for r in range(args.rounds)]

        phases: list[Phase] = []
        for endpoint, bodies in (("baseline", baseline_bodies), ("ingest", ingest_bodies)):
            phase = run_phase(server, endpoint, "warm-up", bodies[: args.warmup], args.concurrency)
            check_phase(server, phase)
        base_chunks, ingest_chunks = slices(baseline_bodies), slices(ingest_bodies)
        for r in range(args.rounds):
            order = ("baseline", "ingest") if r % 2 == 0 else ("ingest", "baseline")
            for endpoint in order:
                chunk = (base_chunks if endpoint == "baseline" else ingest_chunks)[r]
                phase = run_phase(server, endpoint, f"round {r + 1}", chunk, args.concurrency)
                check_phase(server, phase)
                phases.append(phase)
                print(f"  {phase.label:8} {endpoint:8} {phase.rate:8.1f} req/s", flush=True)
            if time.time() - signed_at > RUN_BUDGET_S:
                raise BenchError(
                    f"run exceeded {RUN_BUDGET_S:.0f} s: signed events would expire; "
                    "lower --requests"
                )
        stored = verify_storage(tag, ingest_sent=total, baseline_sent=total, broker=broker)
    finally:
        server.stop()
        broker.flushdb()

    baseline = summarize([p for p in phases if p.endpoint == "baseline"])
    ingest = summarize([p for p in phases if p.endpoint == "ingest"])
    ratio = ingest["rps"] / baseline["rps"]
    ratio_ok = ratio >= TARGET_RATIO
    p99_ok = ingest["p99_ms"] < TARGET_P99_MS

    round_ratios = sorted(
        i.rate / b.rate
        for b, i in zip(
            [p for p in phases if p.endpoint == "baseline"],
            [p for p in phases if p.endpoint == "ingest"],
            strict=True,
        )
    )
    round_ratio_median = round(round_ratios[len(round_ratios) // 2], 3)
    stack_cpu = {
        name: row["cpu_ms_per_request"]["server_stack"]
        for name, row in (("baseline", baseline), ("ingest", ingest))
    }
    cpu_ratio = stack_cpu["baseline"] / stack_cpu["ingest"]
    other_share = max(baseline["other_cpu_share"], ingest["other_cpu_share"])

    print()
    print(
        f"{'endpoint':<21}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"  | CPU ms/req: {'gunicorn':>8}{'postgres':>9}{'redis':>6}{'stack':>7}"
    )
    for name, row in (("baseline (1 INSERT)", baseline), ("ingest (webhook)", ingest)):
        cpu = row["cpu_ms_per_request"]
        print(
            f"{name:<21}{row['rps']:>8.1f}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
            f"{row['max_ms']:>8.2f}  |             {cpu['gunicorn_workers']:>8.2f}"
            f"{cpu['postgres_backends']:>9.2f}{cpu['redis']:>6.2f}{cpu['server_stack']:>7.2f}"
        )
    print()
    print(f"ingest / baseline throughput ratio: {ratio:.2f}")
    print(
        f"  per-round paired ratios {round_ratios[0]:.2f}..{round_ratios[-1]:.2f}"
        f" (median {round_ratio_median:.2f});"
        f" server-stack CPU cost ratio baseline/ingest {cpu_ratio:.2f}"
    )
    print(
        f"target ingest >= {TARGET_RATIO:.0%} of baseline throughput: "
        f"{'PASS' if ratio_ok else 'FAIL'} ({ratio:.0%})"
    )
    print(
        f"target ingest p99 < {TARGET_P99_MS:.0f} ms: "
        f"{'PASS' if p99_ok else 'FAIL'} ({ingest['p99_ms']:.2f} ms)"
    )
    print(
        f"verified: {stored['webhook_event_rows']} webhook_event rows (all received), "
        f"{stored['baseline_rows']} baseline rows, "
        f"{stored['celery_messages_queued']} Celery messages published by the requests "
        "(the event pump hands events out)"
    )
    print(
        f"server, PostgreSQL, Redis and this client share {os.cpu_count()} CPUs; "
        f"other processes used {other_share:.0%} of them during the measured phases"
    )
    if other_share > OTHER_CPU_WARN:
        print(
            f"WARNING: more than {OTHER_CPU_WARN:.0%} of the machine was busy with other "
            "processes: req/s and latencies are understated and noisy; the CPU ms/req "
            "columns are the more reliable comparison. Re-run on a quiet machine."
        )

    results = {
        "benchmark": "stripe webhook ingest vs one-INSERT baseline",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([".venv/bin/python", "bench/ingest.py", *sys.argv[1:]]),
        "config": {
            "requests_per_endpoint": args.requests,
            "warmup_per_endpoint": args.warmup,
            "rounds": args.rounds,
            "order": "ABBA (baseline, ingest, ingest, baseline, ...)",
            "concurrency": args.concurrency,
            "gunicorn": {
                "workers": args.workers,
                "worker_class": args.worker_class,
                "threads": args.threads,
            },
            "database": DATABASE_URL,
            "broker": BROKER_URL,
            "event_type": "invoice.payment_failed",
            "body_bytes": [sizes[0], sizes[-1]],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "baseline": baseline,
        "ingest": ingest,
        "ratio": round(ratio, 3),
        "round_ratios": [round(r, 3) for r in round_ratios],
        "round_ratio_median": round_ratio_median,
        "server_stack_cpu_ratio": round(cpu_ratio, 3),
        "other_cpu_share": other_share,
        "quiet_machine": other_share <= OTHER_CPU_WARN,
        "targets": {
            "ratio_min": TARGET_RATIO,
            "ratio_ok": ratio_ok,
            "p99_max_ms": TARGET_P99_MS,
            "p99_ok": p99_ok,
        },
        "verified": stored,
        "wall_seconds": round(time.monotonic() - run_started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "ingest.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} (total {results['wall_seconds']} s)")


if __name__ == "__main__":
    main()
