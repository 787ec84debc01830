#!/usr/bin/env python
"""Where does an ingest request spend its time? In-process profile, no gunicorn.

    .venv/bin/python bench/profile_ingest.py [--requests N] [--sort cumulative|tottime]

Same settings and environment as bench/ingest.py (bench db, Redis db 14, real Celery
publish), driven by Django's test Client in one thread. Prints a cProfile of the
ingest loop and of the baseline loop, then a per-step timing of the ingest path's
pieces measured in isolation. Run bench/ingest.py first (it creates the database).
Empties redis db 14 at the end; the rows it writes stay in dunning_bench (the next
bench/ingest.py run truncates them).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
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

from bench.ingest import BROKER_URL, SECRET, make_requests, server_env  # noqa: E402

os.environ.update(server_env())

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402

from billing_events import signature  # noqa: E402
from billing_events.ingest import enqueue_processing  # noqa: E402
from billing_events.models import WebhookEvent  # noqa: E402
from billing_events.normalize import parse_event  # noqa: E402
from config.celery import app as celery_app  # noqa: E402
from dunning import clock  # noqa: E402


def profile_loop(client: Client, path: str, bodies, sort: str, top: int) -> float:
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for body, header in bodies:
        response = client.post(
            path, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code} {response.content[:200]!r}")
    profiler.disable()
    elapsed = time.perf_counter() - started
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
    print(out.getvalue())
    return elapsed / len(bodies)


def time_step(name: str, fn, n: int) -> float:
    """Mean CPU of this process per call (robust to other load) and mean wall time."""
    cpu_started, started = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    cpu = (time.process_time() - cpu_started) / n * 1000
    wall = (time.perf_counter() - started) / n * 1000
    print(f"  {name:<58}{cpu:8.3f} ms cpu {wall:8.3f} ms wall")
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    n = args.requests
    tag = "p" + time.strftime("%H%M%S")
    now = int(time.time())
    warm = make_requests(50, tag=tag + "w", offset=0, now=now)
    bodies = make_requests(n, tag=tag, offset=0, now=now)
    client = Client()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_baseline (id bigserial PRIMARY KEY,"
            " body_bytes integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        )
    try:
        for body, header in warm:
            client.post(
                "/webhooks/stripe/",
                data=body,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=header,
            )
            client.post(
                "/bench/insert/",
                data=body,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=header,
            )
        print(f"=== ingest: {n} requests, sorted by {args.sort}")
        ingest_ms = profile_loop(client, "/webhooks/stripe/", bodies, args.sort, args.top) * 1000
        print(f"=== baseline: {n} requests, sorted by {args.sort}")
        base_ms = profile_loop(client, "/bench/insert/", bodies, args.sort, 20) * 1000
        print(
            f"wall per request under cProfile: ingest {ingest_ms:.3f} ms, "
            f"baseline {base_ms:.3f} ms\n"
        )

        # The ingest path's steps one at a time, without the profiler's overhead.
        print(f"=== steps of the ingest path in isolation ({n} iterations each, no profiler)")
        payloads = [body for body, _ in bodies]
        headers = [header for _, header in bodies]
        events = [json.loads(p) for p in payloads]
        t_now = time.time()
        total = 0.0
        total += time_step(
            "signature.verify (HMAC-SHA256, 4 KB)",
            lambda i: signature.verify(
                payload=payloads[i],
                header=headers[i],
                secrets=[SECRET],
                tolerance_seconds=300,
                now_unix=t_now,
            ),
            n,
        )
        total += time_step("json.loads(payload)", lambda i: json.loads(payloads[i]), n)
        total += time_step("parse_event(event)", lambda i: parse_event(events[i]), n)
        WebhookEvent.objects.filter(stripe_event_id__startswith=f"evt_bench_{tag}").delete()

        def create(i: int) -> WebhookEvent:
            event = events[i]
            with transaction.atomic():
                return WebhookEvent.objects.create(
                    stripe_event_id=event["id"],
                    type=event["type"],
                    stripe_created=clock.from_unix(event["created"]),
                    livemode=False,
                    payload=event,
                    status="received",
                    last_error="",
                    received_at=clock.now(),
                    next_attempt_at=clock.now(),
                )

        created: list[int] = []
        total += time_step(
            "atomic() + WebhookEvent.objects.create (jsonb payload)",
            lambda i: created.append(create(i).pk),
            n,
        )
        time_step(
            "  (for scale) one raw INSERT via connection.cursor()",
            lambda i: connection.cursor().execute(
                "INSERT INTO bench_baseline (body_bytes) VALUES (%s)", [i]
            ),
            n,
        )
        total += time_step(
            "enqueue_processing (Celery apply_async -> Redis)",
            lambda i: enqueue_processing(created[i]),
            n,
        )
        from billing_events.tasks import process_webhook_event

        time_step(
            "  (for scale) amqp.as_task_v2, message build only",
            lambda i: celery_app.amqp.as_task_v2(f"id-{i}", process_webhook_event.name, args=[i]),
            n,
        )
        import redis

        raw = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        time_step(
            "  (for scale) raw redis LPUSH of a 1 KB message",
            lambda i: raw.lpush("bench_raw", b"x" * 1024),
            n,
        )
        print(f"  {'sum of the steps (cpu)':<58}{total:8.3f} ms")
    finally:
        import redis

        redis.Redis.from_url(BROKER_URL).flushdb()
        connection.close()


if __name__ == "__main__":
    main()
