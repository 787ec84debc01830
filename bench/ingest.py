#!/usr/bin/env python
"""Benchmark (issue #16): Stripe webhook ingest vs one jsonb INSERT, same gunicorn server.

    .venv/bin/python bench/ingest.py [--rounds 8] [--seconds 6] [--connections 8]

Needs wrk, the out-of-process HTTP load generator: `apt-get install -y wrk`.

The database `dunning_bench_ingest` (created, migrated, emptied) and Redis db 14 are the
bench's own (BENCH_INGEST_DATABASE and BENCH_INGEST_REDIS_DB name others); only Redis keys
that appear during the run are deleted. gunicorn serves
`config.wsgi` with bench.settings: 4 sync workers, production's worker class, where an
idle worker takes the next connection (gthread's keep-alive connections split between
workers at random, 8/0 at times, which swings a phase's rate more than the code does).
The baseline (`bench.views.baseline_insert`) is a Django view that INSERTs the body into
a jsonb column. wrk (8 connections) posts pre-signed `invoice.payment_failed` events,
every request a different event id (bench/wrk/signed_events.lua), in timed phases of
several thousand requests, interleaved in ABBA rounds. Prints the median and spread of
the per-round ratio of req/s, p50/p99, CPU per request of each process of the stack, the
load average, and the verdicts: goal >= 0.85x and p99 < 25 ms, floor 0.8x.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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

import psycopg  # noqa: E402

from bench import common, processes  # noqa: E402
from bench.common import BenchError, median  # noqa: E402
from bench.processes import StackSample  # noqa: E402
from billing_events import samples  # noqa: E402  (pure builders, no Django)
from billing_events.signature import sign_header  # noqa: E402

# The bench's own database and Redis db; BENCH_INGEST_DATABASE / BENCH_INGEST_REDIS_DB name
# others, so two checkouts on one server do not share them.
DB_NAME = os.environ.get("BENCH_INGEST_DATABASE", "dunning_bench_ingest")
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
BROKER_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('BENCH_INGEST_REDIS_DB', '14'))}"
SECRET = "whsec_bench_0123456789abcdef"
RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "wrk" / "signed_events.lua"
PATHS = {"baseline": "/bench/insert/", "ingest": "/webhooks/stripe/"}
GOAL_RATIO, GOAL_P99_MS, FLOOR_RATIO = 0.85, 25.0, 0.80
BASELINE_TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS bench_baseline (id bigserial PRIMARY KEY,"
    " body jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
)


def server_env() -> dict[str, str]:
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="bench.settings",
        DJANGO_DEBUG="false",
        DATABASE_URL=DATABASE_URL,
        # Production's 60 s would end each backend mid-run; an ended backend's CPU is only
        # seen mixed with every other database's in the postmaster's reaped total.
        DATABASE_CONN_MAX_AGE="600",
        STRIPE_WEBHOOK_SECRET=SECRET,
        CELERY_BROKER_URL=BROKER_URL,
        CELERY_TASK_ALWAYS_EAGER="false",  # production: the event pump hands events out
        DUNNING_TEST_CLOCK="false",
        SENTRY_DSN="",
        LOG_LEVEL="INFO",
    )


def setup_database(fresh: bool) -> None:
    """Create and migrate the bench database, and empty both measured tables."""
    common.create_database(DB_NAME, drop_first=fresh)
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    done = subprocess.run(migrate, cwd=ROOT, env=server_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"migrate failed (try --fresh-db):\n{done.stdout}\n{done.stderr}")
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(BASELINE_TABLE_SQL)
        conn.execute(
            "TRUNCATE bench_baseline, billing_events_webhookevent RESTART IDENTITY CASCADE"
        )
        conn.execute("VACUUM ANALYZE bench_baseline, billing_events_webhookevent")


def event_template(tag: str, now: int) -> bytes:
    """One signed-shape invoice.payment_failed body with fixed-width ids to substitute."""
    invoice = samples.invoice(
        id=f"in_{tag}_00000000",
        customer="cus_bench000000",
        created=now - 3600,
        attempt_count=1,
        subscription="sub_bench000000",
        next_payment_attempt=now + 3 * 86400,
    )
    event = samples.event("invoice.payment_failed", invoice, created=now, id=f"evt_{tag}_00000000")
    body = json.dumps(event, separators=(",", ":")).encode()
    assert b"\n" not in body and b"\t" not in body
    return body


def write_records(path: Path, tag: str, count: int) -> int:
    """`count` distinct signed events, one request a line; returns the body size."""
    now = int(time.time())
    template = event_template(tag, now)
    with path.open("wb") as out:
        for n in range(count):
            body = (
                template.replace(f"_{tag}_00000000".encode(), f"_{tag}_{n:08d}".encode())
                .replace(b"cus_bench000000", f"cus_bench{n % 997:06d}".encode())
                .replace(b"sub_bench000000", f"sub_bench{n % 997:06d}".encode())
            )
            header = sign_header(payload=body, secret=SECRET, timestamp=now)
            out.write(header.encode() + b"\t" + body + b"\n")
    return len(template)


def run_phase(args, ctx: dict, side: str, label: str, seconds: int, count: int) -> dict:
    ctx["count"] += 1
    tag = f"b{ctx['run']}p{ctx['count']:03d}"
    records = RESULTS / "ingest_records.txt"
    ctx["body_bytes"] = write_records(records, tag, count)
    before = StackSample.take(*ctx["pids"])
    url, script_args = f"http://127.0.0.1:{ctx['port']}", (records, PATHS[side], args.wrk_threads)
    wrk = common.run_wrk(LUA, url, seconds, args.connections, args.wrk_threads, *script_args)
    cpu = processes.stack_cpu(before, StackSample.take(*ctx["pids"]), DB_NAME)
    load = processes.load_average()
    if wrk["overrun"]:
        return run_phase(args, ctx, side, label, seconds, count * 2)  # sized too small
    if any(wrk["errors"].values()):
        raise BenchError(f"{side} {label}: wrk errors {wrk['errors']}; see the gunicorn log")
    phase = dict(side=side, label=label, tag=tag, wrk=wrk, cpu=cpu, load=load)
    phase["rps"] = wrk["requests"] / wrk["duration_us"] * 1e6
    if label != "warm-up":
        ctx["phases"].append(phase)
    return phase


def verify(ctx: dict, keys: common.RedisKeys) -> dict:
    """Every 200 is a stored row (received and due); no Celery message was published."""
    with psycopg.connect(DATABASE_URL) as conn:
        events = dict(
            (tag, (n, due))
            for tag, n, due in conn.execute(
                "SELECT split_part(stripe_event_id, '_', 2), count(*), count(*) FILTER"
                " (WHERE status = 'received' AND next_attempt_at IS NOT NULL)"
                " FROM billing_events_webhookevent GROUP BY 1"
            )
        )
        base = dict(
            conn.execute(
                "SELECT split_part(body->>'id', '_', 2), count(*) FROM bench_baseline GROUP BY 1"
            )
        )
    problems = []
    for p in ctx["phases"]:
        rows, due = (
            events.get(p["tag"], (0, 0)) if p["side"] == "ingest" else (base.get(p["tag"], 0),) * 2
        )
        if not p["wrk"]["requests"] <= rows <= p["wrk"]["issued"] or due != rows:
            sent = f"{p['wrk']['requests']} answered of {p['wrk']['issued']} sent"
            problems.append(f"{p['side']} {p['label']}: {rows} rows ({due} due), {sent}")
    if new := keys.new_keys():
        problems.append(f"the requests published to {BROKER_URL}: {sorted(new)[:5]}")
    if problems:
        raise BenchError("storage check failed: " + "; ".join(problems))
    return {"event_rows": sum(n for n, _ in events.values()), "baseline_rows": sum(base.values())}


def report(args, ctx: dict, stored: dict) -> dict:
    sides = {s: common.summarize([p for p in ctx["phases"] if p["side"] == s]) for s in PATHS}
    rps = {side: row["phase_rps"] for side, row in sides.items()}
    ratios = [i / b for b, i in zip(rps["baseline"], rps["ingest"], strict=True)]
    ratio, p99, loads = (
        median(ratios),
        sides["ingest"]["p99_ms"],
        [p["load"] for p in ctx["phases"]],
    )
    cpu = {side: row["cpu_ms_per_request"] for side, row in sides.items()}
    goal = ratio >= GOAL_RATIO and p99 < GOAL_P99_MS
    print(
        f"\n{'':<10}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}  CPU ms/request: gunicorn"
        "  postgres (ours+exited+aux)  redis  stack | wrk"
    )
    for name, row in sides.items():
        c = cpu[name]
        pg = f"{c['postgres_backends']:.3f}+{c['postgres_exited']:.3f}+{c['postgres_aux']:.3f}"
        print(
            f"{name:<10}{row['rps']:>8.1f}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
            f"{c['gunicorn']:>25.3f}  {pg:>25}{c['redis']:>7.3f}{c['stack']:>7.3f}"
            f" | {c['client']:.3f}"
        )
    config = dict(vars(args), database=DATABASE_URL, broker=BROKER_URL, cpus=os.cpu_count())
    config.update(body_bytes=ctx["body_bytes"], phase_seconds=ctx["phase_seconds"])
    results = {
        "command": " ".join([".venv/bin/python", "bench/ingest.py", *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        **sides,
        "ratio_median": round(ratio, 3),
        "ratio_spread": [round(min(ratios), 3), round(max(ratios), 3)],
        "round_ratios": [round(r, 3) for r in ratios],
        "stack_cpu_ratio": round(cpu["baseline"]["stack"] / cpu["ingest"]["stack"], 3),
        "load_average_1min": {
            "median": round(median(loads), 2),
            "min": min(loads),
            "max": max(loads),
        },
        "other_cpu_share": max(row["other_cpu_share"] for row in sides.values()),
        "goal": {"ratio": GOAL_RATIO, "p99_ms": GOAL_P99_MS, "pass": goal},
        "floor": {"ratio": FLOOR_RATIO, "pass": ratio >= FLOOR_RATIO},
        "verified": stored,
    }
    r, load = results, results["load_average_1min"]
    print(
        f"\ningest/baseline req/s over {len(ratios)} ABBA rounds: median {ratio:.3f},"
        f" spread {min(ratios):.3f}..{max(ratios):.3f}; stack CPU per request baseline/ingest"
        f" {r['stack_cpu_ratio']:.3f}\nload average (1 min) at the end of each measured phase:"
        f" median {load['median']:.2f}, {load['min']:.2f}..{load['max']:.2f} on {os.cpu_count()}"
        f" CPUs; processes outside the stack used {r['other_cpu_share']:.0%} of the CPUs"
    )
    for name, pid in zip(("PostgreSQL", "Redis"), ctx["pids"][1:], strict=True):
        if pid is None:
            print(f"{name}'s processes are not visible in this /proc: its CPU is NOT counted")
    print(
        f"GOAL  >= {GOAL_RATIO}x and ingest p99 < {GOAL_P99_MS:.0f} ms: "
        f"{'PASS' if r['goal']['pass'] else 'FAIL'} ({ratio:.3f}x, p99 {p99:.2f} ms)"
        f"\nFLOOR >= {FLOOR_RATIO}x: {'PASS' if r['floor']['pass'] else 'FAIL'} ({ratio:.3f}x)"
        f"\nverified: {stored['event_rows']} events stored received and due,"
        f" {stored['baseline_rows']} baseline rows, no Celery message published"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="ABBA rounds (one phase per side)")
    parser.add_argument("--seconds", type=int, default=6, help="shortest measured phase")
    parser.add_argument("--min-requests", type=int, default=3000, help="per phase, at least")
    parser.add_argument("--warmup-seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument("--fresh-db", action="store_true", help=f"drop and recreate {DB_NAME}")
    args = parser.parse_args()
    common.wrk_binary()
    started = time.monotonic()
    keys = common.RedisKeys(BROKER_URL)
    print(f"setting up {DATABASE_URL} ...", flush=True)
    setup_database(args.fresh_db)
    port, log = processes.free_port(), RESULTS / "ingest_gunicorn.log"
    server = processes.start_gunicorn(
        server_env(), port, args.workers, args.threads, args.worker_class, log
    )
    pids = (server.pid, *processes.stack_pids(DATABASE_URL, BROKER_URL))
    ctx = dict(run=f"{os.getpid() % 100000:05d}", port=port, count=0, phases=[], pids=pids)
    try:
        rates = {}  # the warm-up's rates size the phases and their record files
        for side in PATHS:
            rates[side] = run_phase(args, ctx, side, "warm-up", args.warmup_seconds, 8000)["rps"]
            print(f"  warm-up  {side:<9}{rates[side]:8.1f} req/s", flush=True)
        seconds = max(args.seconds, math.ceil(args.min_requests / min(rates.values())))
        sizes = {side: math.ceil(rate * seconds * 1.5) + 500 for side, rate in rates.items()}
        ctx["phase_seconds"] = seconds
        for r in range(args.rounds):
            for side in ("baseline", "ingest") if r % 2 == 0 else ("ingest", "baseline"):
                phase = run_phase(args, ctx, side, f"round {r + 1}", seconds, sizes[side])
                print(
                    f"  {phase['label']:<9}{side:<9}{phase['rps']:8.1f} req/s"
                    f"  load {phase['load']:.2f}",
                    flush=True,
                )
        stored = verify(ctx, keys)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        keys.clean_up()
        (RESULTS / "ingest_records.txt").unlink(missing_ok=True)
    results = report(args, ctx, stored)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    (RESULTS / "ingest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote bench/results/ingest.json ({results['wall_seconds']} s)")


if __name__ == "__main__":
    main()
