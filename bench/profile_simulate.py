#!/usr/bin/env python
"""Where does a simulated run spend its time? In-process timing of `run_service`.

    .venv/bin/python bench/profile_simulate.py [--accounts 300] [--days 30] [--seed 7]
        [--database postgresql|sqlite] [--cprofile N]

Runs one book through the service (as `manage.py simulate` does, without the legacy model
and the report) in a scratch database of its own (BENCH_SIMULATE_DATABASE + `_profile`,
or the bench's SQLite file), with a timer around each part of the run, and splits the
run's wall time by what it was for: the service's per-event path (the webhook request:
ingest, processing, mirror, engine, and what the request runs in-process), the test
clock's walk, case reviews, the outbox, and the simulator's own work (building and signing
Stripe's events, the delivery queue and its noise, the next stop, echoing Stripe's
follow-ups, the daily sample, the gateway's answers), then the convergence check. Each
part's time is exclusive: what it spends inside another timed part counts there. Prints
the load average beside the figures; `--cprofile N` adds cProfile's top N functions.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.simulate_child import PG_NAME, SQLITE_FILE, _environment  # noqa: E402


# (bucket, module or class, attribute): each is wrapped with a timer; a bucket's time is
# exclusive (what it spends inside another bucket counts there), so nothing counts twice.
def _targets() -> list[tuple[str, object, str]]:
    from django.test import Client

    from billing_events import samples
    from dunning import outbox, schedule
    from dunning.intake import processing
    from simulation import driver
    from simulation.clock_walk import ClockWalk
    from simulation.driver import Driver

    return [
        ("service: webhook request (ingest, processing, engine)", Client, "post"),
        ("service: test clock walk (its own due queries)", ClockWalk, "advance"),
        ("service: case reviews (walk)", schedule, "recompute_due_cases"),
        ("service: outbox drained (walk and after deliveries)", outbox, "drain"),
        ("service: event pump after deliveries", processing, "sweep"),
        ("simulator: gateway answers (decline code check)", Driver, "decide"),
        ("simulator: next stop, anything due (probe)", ClockWalk, "due"),
        ("simulator: echo Stripe's follow-ups", Driver, "echo"),
        ("simulator: daily sample", driver, "sample_day"),
        ("simulator: sign events", samples, "signed"),
        ("simulator: build events", Driver, "event"),
        ("simulator: delivery noise and queue", Driver, "send"),
        ("simulator: read the response", Client, "_parse_json"),
        ("convergence check (drift recompute of every account)", Driver, "converge"),
    ]


class Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.stack: list[list] = []  # [name, started, time spent in nested buckets]

    def wrap(self, name: str, function):
        timers = self

        def timed(*args, **kwargs):
            timers.stack.append([name, time.perf_counter(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                _, started, nested = timers.stack.pop()
                spent = time.perf_counter() - started
                timers.seconds[name] = timers.seconds.get(name, 0.0) + spent - nested
                timers.calls[name] = timers.calls.get(name, 0) + 1
                if timers.stack:
                    timers.stack[-1][2] += spent

        return timed

    def install(self) -> None:
        for name, owner, attribute in _targets():
            setattr(owner, attribute, self.wrap(name, getattr(owner, attribute)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", default="postgresql")
    parser.add_argument(
        "--cprofile", type=int, default=0, metavar="N", help="also cProfile; print N lines"
    )
    args = parser.parse_args()
    _environment(args.database)
    import django

    django.setup()
    from django.db import connection

    from simulation.generator import generate
    from simulation.scratch import scratch_database
    from simulation.service import run_service

    name = f"{PG_NAME}_profile" if args.database == "postgresql" else str(SQLITE_FILE)
    timers = Timers()
    timers.install()
    profile = cProfile.Profile() if args.cprofile else None
    load_before = os.getloadavg()[0]
    with scratch_database(name):
        book = generate(accounts=args.accounts, days=args.days, seed=args.seed)
        started = time.perf_counter()
        if profile:
            profile.enable()
        run = run_service(book)
        if profile:
            profile.disable()
        wall = time.perf_counter() - started
        commits = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )
                commits = cursor.fetchone()[0]
    events = run.events_created
    print(
        f"{args.accounts:,} accounts x {args.days} days on {args.database}: {wall:.1f} s, "
        f"{events:,} events, {sum(run.deliveries.values()):,} deliveries, "
        f"{run.iterations:,} stops, {commits or '-'} commits; load {load_before:.2f} "
        f"before, {os.getloadavg()[0]:.2f} after"
    )
    accounted = sum(timers.seconds.values())
    for label, seconds in sorted(timers.seconds.items(), key=lambda item: -item[1]):
        print(
            f"  {label:55} {seconds:7.1f} s {100 * seconds / wall:5.1f} % "
            f"{1000 * seconds / max(events, 1):6.2f} ms/event {timers.calls[label]:>8,} calls"
        )
    rest = wall - accounted
    print(f"  {'simulator: the driver loop, the rest':55} {rest:7.1f} s {100 * rest / wall:5.1f} %")
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.cprofile)


if __name__ == "__main__":
    main()
