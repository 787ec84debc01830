#!/usr/bin/env python
"""Benchmark (issue #16): the whole path, signed webhook in to decision applied, on the
real processes, against the physical floor of this machine measured in the same run.

    .venv/bin/python bench/e2e.py [--accounts 200] [--rounds 3] [--steps 0.5]

Needs wrk (`apt-get install -y wrk`) and pgbench (the postgresql package).

Starts gunicorn (config.wsgi, sync workers), a Celery worker (prefork, 2 processes) and
beat as subprocesses on the bench's own database `bench_e2e_run` (dropped and migrated
at the start) and Redis db 9 (only keys that appear during the run are deleted), with
enforcement on (`DUNNING_ROLLOUT_DEFAULT_STAGE=100`), the fake Stripe for the worker's
calls (retries, decline look-ups) and a loopback Account Management. Each round, wrk
(8 connections, closed loop) posts every delivery of --accounts customers living the
demo's dunning stories (bench/e2e_events.py) once; the bench then waits for the drain:
every event processed and no side effect due. Measured per round: events per second
sustained (distinct events / first received to last event processed or side effect of
its accounts finished), received-to-processed p50/p99 from the stored events, CPU per
event of every process. Between rounds, pgbench simple-update (`-N -c 8 -T 10`) on
`bench_e2e_pgbench`, in alternating order; the ratio is events/s / pgbench tps. Then one
paced phase per --steps fraction of the sustained rate (an open-ish loop: wrk's delay),
for the latency when the stack keeps up. Last, the "nothing lost" verdict (exit 1 if
not): every event stored once and processed, no outbox item overdue or dead, and a
recompute of every account that would change nothing. No numeric goal (the issue sets
none for this path): the figures, the ratio and the verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)  # run as a script: import from the repo root, not bench/
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, processes  # noqa: E402
from bench.common import BenchError, median, percentile  # noqa: E402

DB_NAME, PGBENCH_DB = "bench_e2e_run", "bench_e2e_pgbench"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER_URL = "redis://127.0.0.1:6379/9"
SECRET = "whsec_bench_e2e_0123456789"
RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "wrk" / "e2e_events.lua"
FILLER = "/static/admin/img/icon-yes.svg"  # what a connection with no event left asks for
STACK_ENV = dict(
    DJANGO_SETTINGS_MODULE="config.settings",
    DJANGO_DEBUG="false",
    DATABASE_URL=DATABASE_URL,
    # Production's 60 s would end backends mid-round, whose CPU /proc then only shows
    # mixed with every other database's; 600 s keeps them alive through a round.
    DATABASE_CONN_MAX_AGE="600",
    CELERY_BROKER_URL=BROKER_URL,
    CELERY_TASK_ALWAYS_EAGER="false",
    STRIPE_WEBHOOK_SECRET=SECRET,
    STRIPE_EVENT_POLL_SECONDS="0",  # the backstop lists the fake's events: none, so off
    DUNNING_ROLLOUT_DEFAULT_STAGE="100",  # decisions enforced, not shadowed
    EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    DUNNING_TEST_CLOCK="false",
    DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
    SENTRY_DSN="",
    LOG_LEVEL="WARNING",
)
os.environ.update(STACK_ENV)  # this process reads the same database through Django

import django  # noqa: E402

django.setup()

from bench import e2e_events, e2e_stack, e2e_verify  # noqa: E402
from bench.e2e_report import report  # noqa: E402
from tests.fake_stripe import API_KEY, FakeStripe  # noqa: E402
from tests.http_peer import Peer  # noqa: E402


def setup_databases() -> None:
    common.create_database(DB_NAME, drop_first=True)
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    done = subprocess.run(migrate, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"migrate failed:\n{done.stdout}\n{done.stderr}")
    common.create_database(PGBENCH_DB, drop_first=True)
    pgbench("-i", "-q", PGBENCH_DB)


def pgbench(*args: str) -> str:
    command = ["pgbench", "-h", "127.0.0.1", "-U", "postgres", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def floor_phase(args, postmaster: int | None) -> dict:
    """pgbench simple-update: the commits per second this machine's PostgreSQL does now,
    and the CPU of a transaction: pgbench itself and its backends, read every 0.2 s while
    they live (they exit with pgbench, and an exited backend's CPU is only seen mixed
    with every other database's), so up to 0.2 s of each backend's last work is missed."""
    command = ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-N", "-c", str(args.connections)]
    command += ["-j", "2", "-T", str(args.pgbench_seconds), PGBENCH_DB]
    clients, backends = e2e_stack.children_cpu(), {}
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while run.poll() is None:
        for pid, (ticks, cmd) in processes.Tree.take(postmaster).children.items():
            if f" {PGBENCH_DB} " in cmd:
                backends[pid] = ticks / processes.CLK_TCK
        time.sleep(0.2)
    out, err = run.communicate()
    if run.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed:\n{out}\n{err}")
    cpu = sum(backends.values()) + e2e_stack.children_cpu() - clients
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    transactions = int(re.search(r"transactions actually processed: (\d+)", out).group(1))
    return {
        "tps": tps,
        "cpu_ms_per_tx": cpu / transactions * 1000,
        "load": processes.load_average(),
    }


def run_wrk(records: Path, port: int, args, delay_ms: int, max_seconds: int) -> dict:
    """Post every record once (one wrk thread: see the Lua script); SIGINT wrk when it
    says it is done."""
    command = [common.wrk_binary(), "-t", "1", "-c", str(args.connections)]
    command += ["-d", f"{max_seconds}s", "--timeout", "30s", "-s", str(LUA)]
    command += [f"http://127.0.0.1:{port}", "--", str(records), "/webhooks/stripe/"]
    command += [str(delay_ms), FILLER]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in wrk.stdout:
            lines.append(line)
            if line.startswith("WRK_THREAD_DONE"):
                wrk.send_signal(signal.SIGINT)
        wrk.wait(timeout=60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    for line in lines:
        if line.startswith("WRK_RESULT "):
            return json.loads(line.removeprefix("WRK_RESULT "))
    raise BenchError(f"wrk exited with {wrk.returncode}:\n{''.join(lines)}")


def wait_drained(stack, tag: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        state = e2e_verify.progress(tag)
        if state["stored"] and state["done"] == state["stored"] and not state["outbox_due"]:
            return
        time.sleep(1)
    raise BenchError(f"round {tag} not drained after {timeout:.0f} s: {e2e_verify.progress(tag)}")


def events_phase(ctx: dict, args, label: str, accounts: int, delay_ms: int = 0) -> dict:
    ctx["count"] += 1
    tag = f"e2e{ctx['run']}r{ctx['count']:02d}"
    start = e2e_events.story_start(time.time())
    deliveries, types = e2e_events.build(tag=tag, accounts=accounts, seed=ctx["count"], start=start)
    records = RESULTS / "e2e_records.txt"
    body = e2e_events.write_records(records, deliveries, secret=SECRET)
    before = e2e_stack.Sample.take(ctx["stack"], *ctx["pids"])
    wrk = run_wrk(records, ctx["port"], args, delay_ms, args.drain_timeout)
    if wrk["answered"] != len(deliveries) or wrk["failed"] or any(wrk["errors"].values()):
        raise BenchError(f"{label}: wrk answered {wrk['answered']} of {len(deliveries)}: {wrk}")
    wait_drained(ctx["stack"], tag, args.drain_timeout)
    cpu = e2e_stack.cpu_between(before, e2e_stack.Sample.take(ctx["stack"], *ctx["pids"]), DB_NAME)
    load = processes.load_average()
    got = e2e_verify.timings(tag)
    events = sum(types.values())
    ctx["posted"] += events
    phase = dict(label=label, tag=tag, accounts=accounts, events=events, load=load, cpu=cpu)
    phase.update(
        deliveries=len(deliveries), body_bytes=body, types=dict(types), effects=got["effects"]
    )
    phase["ingest_rps"] = len(deliveries) / wrk["duration_us"] * 1e6
    phase["wrk_p99_ms"], phase["fillers"] = wrk["p99_us"] / 1000, wrk["fillers"]
    phase["events_per_s"] = events / got["span_s"]
    phase["span_s"], phase["events_span_s"] = got["span_s"], got["events_span_s"]
    phase["p50_ms"] = percentile(got["latencies_ms"], 50)
    phase["p99_ms"] = percentile(got["latencies_ms"], 99)
    phase["latencies_ms"] = got["latencies_ms"]
    print(
        f"  {label:<12} {events:>6} events ({len(deliveries)} deliveries) posted at"
        f" {phase['ingest_rps']:7.1f}/s, {phase['events_per_s']:6.1f} events/s sustained over"
        f" {got['span_s']:5.1f} s, received-to-processed p50 {phase['p50_ms'] / 1000:.2f} s"
        f" p99 {phase['p99_ms'] / 1000:.2f} s, load {load:.2f}",
        flush=True,
    )
    return phase


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=200, help="customers per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default="0.5", help="paced phases, fractions of events/s")
    parser.add_argument("--step-seconds", type=int, default=40)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=2, help="as `make web`")
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--drain-timeout", type=int, default=900)
    args = parser.parse_args()
    common.wrk_binary()
    # A TERM unwinds through the finally blocks, which stop every process group.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    keys = common.RedisKeys(BROKER_URL)
    print(f"setting up {DB_NAME} and {PGBENCH_DB} ...", flush=True)
    setup_databases()
    fake, peer = FakeStripe().start(), Peer().start()
    env = dict(os.environ, STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=fake.url)
    env["ACCOUNT_MANAGEMENT_URL"] = peer.url
    port = processes.free_port()
    stack = e2e_stack.Stack(env, RESULTS / "e2e_logs", web_workers=args.web_workers, port=port)
    ctx = dict(run=f"{os.getpid() % 100000:05d}", count=0, posted=0, stack=stack, port=port)
    rounds, floors, steps = [], [], []
    try:
        stack.start()
        ctx["pids"] = processes.stack_pids(DATABASE_URL, BROKER_URL)
        events_phase(ctx, args, "warm-up", 16)
        for r in range(args.rounds):
            for part in ("events", "floor") if r % 2 == 0 else ("floor", "events"):
                if part == "floor":
                    floors.append(floor_phase(args, ctx["pids"][0]))
                    print(f"  round {r + 1:<6} pgbench {floors[-1]['tps']:8.1f} tps", flush=True)
                else:
                    rounds.append(events_phase(ctx, args, f"round {r + 1}", args.accounts))
        per_account = sum(p["deliveries"] for p in rounds) / sum(p["accounts"] for p in rounds)
        sustained = median([p["events_per_s"] for p in rounds])
        for fraction in [float(f) for f in args.steps.split(",") if f.strip()]:
            rate = fraction * sustained
            accounts = max(8, round(rate * args.step_seconds / per_account))
            delay_ms = round(args.connections * 1000 / rate)
            step = events_phase(ctx, args, f"paced {fraction:.2f}", accounts, delay_ms)
            steps.append(dict(step, fraction=fraction))
        print("checking that nothing was lost ...", flush=True)
        lost = e2e_verify.nothing_lost(ctx["posted"])
        lost["errors_logged"] = stack.errors_logged()
    finally:
        stack.stop()
        fake.stop()
        peer.stop()
        keys.clean_up()
        (RESULTS / "e2e_records.txt").unlink(missing_ok=True)
    results = report(args, rounds, floors, steps, lost)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    (RESULTS / "e2e.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote bench/results/e2e.json ({results['wall_seconds']} s)")
    return 1 if lost["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
