#!/usr/bin/env python
"""Benchmark: payment retries run by the real worker pool vs no-op tasks drained by it.

    .venv/bin/python bench/retry_dispatch.py [--retries N] [--noops M] [--rounds R]

1. Its own database `bench_retries_dispatch` and Redis db 5 (only keys that appear during
   the run are deleted, never FLUSHDB); the rollout gate at stage 100; the fake Stripe of
   tests/fake_stripe.py on loopback (a real HTTP server: the official SDK's whole stack).
2. N x R accounts whose renewal failed (soft decline) almost a day ago, delivered as
   Stripe events through `apply_event`: each case plans its first retry a few minutes
   from now. Their other side effects are run, then every retry is made due now.
3. One retry is claimed and run as a worker runs its batch (`outbox.run_items`), in this
   process under CaptureQueriesContext, after one run before it on the same connection
   (which prepared the hot statements, once a session): statements per retry, transaction
   control (BEGIN, COMMIT, SAVEPOINT, RELEASE) counted and also said apart.
4. A real `celery worker --pool prefork --concurrency 2` with the fake Stripe's URL and
   key. Each round, ABBA:
     no-ops    M `bench.noop` messages (default 5,000: several seconds) published while
               the worker consumes nothing (untimed), then timed from `add_consumer`
               until the broker is empty
     retries   N due retries handed out by `outbox.dispatch_due()` (batches of ids, one
               message each) while the worker consumes nothing (untimed), then timed from
               `add_consumer` until every retry is closed and the broker is empty
   Each retry: its lease renewed, the last check (the charge mark), the charge at the fake
   Stripe, then the result recorded and the account recomputed in one transaction; what
   the recompute adds (a "recovered" notice) runs on the same pool, inside the timing.
5. Prints the rates, the ratio (median of rounds, and spread), the verdict against #16's
   goal (>= 0.5x) with the floor (>= 0.2x) apart, statements per retry and the load
   average during the phases; writes bench/results/retry_dispatch.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from importlib import import_module
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common, processes

DB_NAME = "bench_retries_dispatch"
BROKER = "redis://127.0.0.1:6379/5"
QUEUE = "celery"
GOAL, FLOOR = 0.5, 0.2
DAY = 86400

common.django_bench(DB_NAME, CELERY_BROKER_URL=BROKER, CELERY_TASK_ALWAYS_EAGER="false")

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.database import prepare_database  # noqa: E402
from bench.noop import noop  # noqa: E402
from billing_events.models import WebhookEvent  # noqa: E402
from billing_events.scenarios import StripeCustomer  # noqa: E402
from config.celery import app  # noqa: E402
from dunning import outbox, rollout  # noqa: E402
from dunning.intake.processing import apply_event  # noqa: E402
from dunning.models import OutboxItem  # noqa: E402
from tests.fake_stripe import API_KEY, FakeStripe  # noqa: E402

RETRY = OutboxItem.Kind.PAYMENT_RETRY
PENDING = OutboxItem.Status.PENDING


def build(n: int) -> list[int]:
    """n accounts, each with its first retry planned a few minutes from now."""
    run_at = int(timezone.now().timestamp())
    for k in range(n):
        tag = f"bench_retry{k:05d}"
        c = StripeCustomer(id=f"cus_{tag}", subscription=f"sub_{tag}", t=run_at - 3 * DAY)
        c.subscription_event("customer.subscription.created")
        c.t = run_at - 2 * DAY
        c.invoice_event("invoice.finalized")
        c.t = run_at - DAY + 300  # the first retry is planned a day after the failure
        c.charge_event("charge.failed", f"ch_{tag}_1", decline_code="insufficient_funds")
        c.invoice_event("invoice.payment_failed", attempt_count=1)
        for event in c.events:
            with transaction.atomic():
                apply_event(WebhookEvent(stripe_event_id=event["id"], payload=event))
    # Everything else the decisions asked for (standing, notices due now) runs here.
    others = OutboxItem.objects.filter(status=PENDING).exclude(kind=RETRY)
    others.update(next_attempt_at=timezone.now())
    for pk in others.values_list("pk", flat=True):
        outbox.run_item(item_id=pk)
    retries = OutboxItem.objects.filter(kind=RETRY, status=PENDING)
    if retries.count() != n:
        raise common.BenchError(f"{retries.count()} retries planned for {n} accounts")
    # Not due until their round: a recompute's dispatcher kick must not take them early.
    retries.update(next_attempt_at=timezone.now() + timedelta(days=1))
    return list(retries.order_by("pk").values_list("pk", flat=True))


def statements_per_retry(item_id: int) -> list[str]:
    """Every statement a worker sends for one retry of its batch, transaction control
    included: the lease renewed, the check before the charge, the close, the record and
    the recompute (the dispatcher's claim, one statement for a whole batch, is not)."""
    OutboxItem.objects.filter(pk=item_id).update(next_attempt_at=timezone.now())
    if item_id not in outbox.claim_due():
        raise common.BenchError("the sample retry was not claimed")
    with CaptureQueriesContext(connection) as captured:
        [status] = outbox.run_items([item_id])
    if status != "done":
        raise common.BenchError(f"the sample retry ended {status}")
    return [q["sql"] for q in captured.captured_queries]


def broker_empty(client, queue: str) -> bool:
    return client.llen(queue) == 0 and client.hlen("unacked") == 0


def drain(queue: str, client, worker, done=lambda: True) -> float:
    """Seconds from the worker taking the first message of `queue` until the queue is
    empty and `done()`. Each phase has a queue of its own, filled while nobody consumed it
    (then taken up by remote control), so only the draining is timed: not the publishing,
    nor the up to one second a Redis worker takes to start polling a new queue."""
    waiting = client.llen(queue)
    if not app.control.add_consumer(queue, reply=True, timeout=10, limit=1):
        raise common.BenchError(f"the worker did not answer add_consumer({queue})")
    common.wait_until(
        lambda: client.llen(queue) < waiting, timeout=60, what="a first take", alive=worker.alive
    )
    started = time.perf_counter()
    common.wait_until(
        lambda: broker_empty(client, queue) and broker_empty(client, QUEUE) and done(),
        timeout=900,
        what=f"the worker to drain {queue}",
        alive=worker.alive,
    )
    return time.perf_counter() - started


def noop_phase(n: int, round_no: int, client, worker) -> float:
    queue = f"bench_noop_{round_no}"
    for _ in range(n):
        noop.apply_async(queue=queue)
    return n / drain(queue, client, worker)


def retry_phase(ids: list[int], round_no: int, client, worker) -> float:
    queue = f"bench_retry_{round_no}"
    OutboxItem.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now())

    def publish(batch: list[int]) -> bool:  # outbox._publish, to this phase's queue
        import_module("dunning.tasks").run_outbox_items.apply_async(args=[batch], queue=queue)
        return True

    if hasattr(outbox, "_publish"):
        to_phase_queue = mock.patch.object(outbox, "_publish", publish)
    else:  # the code before batches (one message per item), for a before/after figure
        item_task = import_module("dunning.tasks").run_outbox_item
        one = functools.partial(item_task.apply_async, queue=queue)
        to_phase_queue = mock.patch.object(item_task, "apply_async", one)
    handed = 0
    with to_phase_queue:
        while handed < len(ids):
            got = outbox.dispatch_due()
            if not got:
                raise common.BenchError(f"dispatch_due handed out {handed} of {len(ids)}")
            handed += got
    pending = OutboxItem.objects.filter(pk__in=ids, status=PENDING)
    return len(ids) / drain(queue, client, worker, done=at_most_every(0.02, pending.exists))


def at_most_every(seconds: float, still_pending: Callable[[], bool]) -> Callable[[], bool]:
    """`not still_pending()`, asked of the database at most every `seconds`: the 2 ms poll
    would otherwise send the measured PostgreSQL 500 queries a second while the broker's
    queue is momentarily empty (a fifth of a phase's database CPU). At most `seconds` late
    on a phase of several seconds."""
    asked = [0.0]

    def done() -> bool:
        now = time.perf_counter()
        if now - asked[0] < seconds:
            return False
        asked[0] = now
        return not still_pending()

    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--retries", type=int, default=200, help="retries per round")
    # No-ops drain at several hundred a second: a phase of a few hundred lasted about a
    # second, and its rate swung from 377 to 706/s between runs of the same code.
    parser.add_argument(
        "--noops", type=int, default=5000, help="no-op tasks per round (several seconds)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds")
    args = parser.parse_args()
    n = args.retries
    # Stopped from outside (timeout, kill): still stop the worker and clean Redis up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    keys = common.RedisKeys(BROKER)
    fake = FakeStripe().start()
    worker = None
    try:
        prepare_database(DB_NAME, common.ADMIN_DSN)
        rollout.set_gate(
            stage="100", kill_switch=False, allowlist=[], actor="bench", reason="bench"
        )
        settings.STRIPE_API_KEY, settings.STRIPE_API_BASE = API_KEY, fake.url
        started = time.perf_counter()
        ids = build(n * args.rounds + 2)
        print(
            f"built {len(ids)} accounts with a due retry in {time.perf_counter() - started:.0f} s"
        )
        # The first retry on this connection also prepares the hot statements (once a
        # session, `core.prepared`); the second is counted: what every later one sends.
        statements_per_retry(ids.pop())
        sql = statements_per_retry(ids.pop())
        client = keys.client
        client.delete(QUEUE)  # the build's dispatcher kicks

        env = {**os.environ, "STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": fake.url}
        log = common.ROOT / "bench" / "results" / "retry_dispatch_worker.log"
        worker = processes.CeleryWorker(
            env,
            log,
            "-P",
            "prefork",
            "--concurrency",
            "2",
            "-Q",
            QUEUE,
            "-l",
            "warning",
            "--include",
            "bench.noop",
        )
        for _ in range(20):
            noop.apply_async()
        common.wait_until(
            lambda: broker_empty(client, QUEUE), timeout=120, what="the worker", alive=worker.alive
        )
        rounds, loads = [], []
        for r in range(args.rounds):
            batch = ids[r * n : (r + 1) * n]
            if r % 2 == 0:
                noops, retries = (
                    noop_phase(args.noops, r, client, worker),
                    retry_phase(batch, r, client, worker),
                )
            else:
                retries, noops = (
                    retry_phase(batch, r, client, worker),
                    noop_phase(args.noops, r, client, worker),
                )
            loads.append(processes.load_average())
            rounds.append({"noops_per_s": noops, "retries_per_s": retries})
            print(
                f"round {r + 1}: no-ops {noops:.0f}/s, retries {retries:.1f}/s, "
                f"ratio {retries / noops:.3f}"
            )
    finally:
        if worker is not None:
            worker.stop()
        fake.stop()
        keys.clean_up()

    ratios = [r["retries_per_s"] / r["noops_per_s"] for r in rounds]
    ratio = common.median(ratios)
    statuses = dict(
        OutboxItem.objects.filter(kind=RETRY).values_list("status").annotate(n=Count("pk"))
    )
    print(
        f"\nprefork pool of 2, {n} retries and {args.noops} no-ops per round, "
        f"{args.rounds} rounds, load average during the phases {min(loads):.2f}-{max(loads):.2f}"
    )
    print(
        f"retries {common.median([r['retries_per_s'] for r in rounds]):.1f}/s, no-ops "
        f"{common.median([r['noops_per_s'] for r in rounds]):.0f}/s: ratio {ratio:.3f}x "
        f"(rounds {min(ratios):.3f}-{max(ratios):.3f}x)"
    )
    print(
        f"#16 retries vs no-op tasks: {ratio:.3f}x: "
        + common.verdict(ratio, GOAL, FLOOR, higher_is_better=True)
    )
    control = [q for q in sql if q.split()[0] in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")]
    print(
        f"statements per retry: {len(sql)} (goal <= 12), {len(control)} of them transaction "
        f"control; retry items by status: {statuses}"
    )
    out = common.ROOT / "bench" / "results" / "retry_dispatch.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "retry_dispatch",
                "database": DB_NAME,
                "retries_per_round": n,
                "noops_per_round": args.noops,
                "rounds": rounds,
                "ratio": ratio,
                "verdict": common.verdict(ratio, GOAL, FLOOR, higher_is_better=True),
                "statements_per_retry": len(sql),
                "sql": sql,
                "load_average": loads,
                "mean_retry_ms_per_process": 2000
                / statistics.median(r["retries_per_s"] for r in rounds),
                "at": timezone.now().isoformat(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
