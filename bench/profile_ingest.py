#!/usr/bin/env python
"""Where does an ingest request spend its CPU? In-process profile of today's request.

    .venv/bin/python bench/profile_ingest.py [--requests N] [--sort cumulative|tottime]

Calls the WSGI application (`config.wsgi` with bench.settings, as gunicorn serves it in
bench/ingest.py) directly, one thread, with the bench's signed invoice.payment_failed
bodies: a cProfile of the webhook and of the baseline (one jsonb INSERT), then the
ingest path's steps one at a time. Uses the bench's database `dunning_bench_ingest`
(run bench/ingest.py once first: it creates and migrates it) and deletes the rows it
wrote; publishes nothing (the event pump hands events out).
"""

from __future__ import annotations

import argparse
import cProfile
import io
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

from bench.ingest import BASELINE_TABLE_SQL, PATHS, SECRET, server_env, write_records  # noqa: E402

os.environ.update(server_env())

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

from django.db import connection  # noqa: E402

from billing_events import signature, validation  # noqa: E402
from billing_events.ingest import screen_event as screen  # noqa: E402
from billing_events.ingest import store_event  # noqa: E402
from billing_events.validation import envelope_problem  # noqa: E402
from core import clock  # noqa: E402


def post(path: str, body: bytes, header: str) -> int:
    """One request through the WSGI app, the way gunicorn's worker hands it over."""
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_STRIPE_SIGNATURE": header,
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    status = []
    for _ in application(environ, lambda s, h, *_: status.append(s)):
        pass
    return int(status[0].split()[0])


def profile(side: str, records: list[tuple[bytes, str]], sort: str, top: int) -> float:
    profiler = cProfile.Profile()
    cpu = time.process_time()
    profiler.enable()
    for body, header in records:
        if (code := post(PATHS[side], body, header)) != 200:
            raise SystemExit(f"{side}: HTTP {code}")
    profiler.disable()
    cpu = (time.process_time() - cpu) / len(records) * 1000
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
    print(f"=== {side}: {len(records)} requests, sorted by {sort}\n{out.getvalue()}")
    return cpu


def per_request_cpu(side: str, records: list[tuple[bytes, str]]) -> float:
    cpu = time.process_time()
    for body, header in records:
        post(PATHS[side], body, header)
    return (time.process_time() - cpu) / len(records) * 1000


def step(name: str, fn, n: int) -> float:
    cpu = time.process_time()
    for i in range(n):
        fn(i)
    ms = (time.process_time() - cpu) / n * 1000
    print(f"  {name:<52}{ms:8.3f} ms cpu")
    return ms


def read_records(path: Path) -> list[tuple[bytes, str]]:
    lines = path.read_bytes().splitlines()
    return [(body, header.decode()) for header, body in (x.split(b"\t", 1) for x in lines)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args()
    n = args.requests
    tag = f"prof{os.getpid() % 10000:04d}"
    path = ROOT / "bench" / "results" / "profile_records.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(path, tag, 5 * n + 100)
    records = read_records(path)
    path.unlink()
    with connection.cursor() as cursor:
        cursor.execute(BASELINE_TABLE_SQL)
    try:
        warm, rest = records[:100], records[100:]
        for body, header in warm:
            post(PATHS["ingest"], body, header)
            post(PATHS["baseline"], body, header)
        profile("ingest", rest[:n], args.sort, args.top)
        profile("baseline", rest[n : 2 * n], args.sort, 15)
        # Without the profiler's overhead, alternating so drift hits both alike.
        ingest = per_request_cpu("ingest", rest[2 * n : 3 * n])
        baseline = per_request_cpu("baseline", rest[2 * n : 3 * n])
        print(
            f"CPU per request in this process: ingest {ingest:.3f} ms, baseline {baseline:.3f} ms"
        )

        print(f"=== the ingest path's steps in isolation ({n} each)")
        bodies = [body for body, _ in rest[3 * n : 4 * n]]
        headers = [header for _, header in rest[3 * n : 4 * n]]
        parsed = [validation.loads_strict(body) for body in bodies]
        now = clock.now()
        total = step(
            "signature.verify",
            lambda i: signature.verify(
                payload=bodies[i], header=headers[i], secrets=[SECRET],
                tolerance_seconds=300, now_unix=now.timestamp(),
            ),
            n,
        )  # fmt: skip
        total += step("validation.loads_strict", lambda i: validation.loads_strict(bodies[i]), n)
        events = [event for _, event in parsed]
        total += step("validation.envelope_problem", lambda i: envelope_problem(events[i]), n)
        total += step("screen_event (parse_event + fact_problem)", lambda i: screen(events[i]), n)
        total += step(
            "store_event (one INSERT, autocommit)",
            lambda i: store_event(
                event=parsed[i][1], raw_body=bodies[i], status="received", note="", now=now
            ),
            n,
        )
        print(f"  {'sum of the steps':<52}{total:8.3f} ms cpu")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM billing_events_webhookevent WHERE stripe_event_id LIKE %s",
                [f"evt_{tag}_%"],
            )
            cursor.execute("DELETE FROM bench_baseline WHERE body->>'id' LIKE %s", [f"evt_{tag}_%"])
        connection.close()


if __name__ == "__main__":
    main()
