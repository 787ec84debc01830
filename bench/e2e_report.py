"""The printed table and the JSON of bench/e2e.py."""

from __future__ import annotations

import os
import sys
import time

from bench.common import median, percentile

PARTS = ("gunicorn", "worker", "beat", "postgres", "redis", "stack", "bench_and_fakes", "wrk")


def _spread(values: list[float], digits: int = 1) -> dict:
    return {
        "median": round(median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _cpu_per_event(phases: list[dict]) -> dict[str, float]:
    events = sum(p["events"] for p in phases)
    return {k: round(sum(p["cpu"][k] for p in phases) / events * 1000, 3) for k in PARTS}


def report(args, rounds: list[dict], floors: list[dict], steps: list[dict], lost: dict) -> dict:
    ratios = [p["events_per_s"] / f["tps"] for p, f in zip(rounds, floors, strict=True)]
    pooled = [ms for p in rounds for ms in p["latencies_ms"]]
    loads = [p["load"] for p in rounds] + [f["load"] for f in floors]
    cpu = _cpu_per_event(rounds)
    wall = sum(p["cpu"]["wall"] for p in rounds)
    busy = sum(p["cpu"]["machine"] for p in rounds)
    others = max(
        0.0, busy - sum(p["cpu"][k] for p in rounds for k in ("stack", "bench_and_fakes", "wrk"))
    )
    print(
        f"\n{'':<9}{'events':>7}{'deliv.':>7}{'posted/s':>9}{'events/s':>9}{'span s':>7}"
        f"{'(events)':>9}{'p50 s':>7}{'p99 s':>7}{'pgbench':>9}{'ratio':>8}{'load':>6}"
    )
    for p, f, ratio in zip(rounds, floors, ratios, strict=True):
        print(
            f"{p['label']:<9}{p['events']:>7}{p['deliveries']:>7}{p['ingest_rps']:>9.1f}"
            f"{p['events_per_s']:>9.1f}{p['span_s']:>7.1f}{p['events_span_s']:>9.1f}"
            f"{p['p50_ms'] / 1000:>7.2f}{p['p99_ms'] / 1000:>7.2f}{f['tps']:>9.1f}"
            f"{ratio:>8.4f}{p['load']:>6.2f}"
        )
    eps = _spread([p["events_per_s"] for p in rounds])
    tps = _spread([f["tps"] for f in floors])
    print(
        f"\nevents/s sustained (closed loop, {args.connections} connections, to the drain):"
        f" median {eps['median']} ({eps['min']}..{eps['max']}) over {len(rounds)} rounds"
        f"\npgbench simple-update tps (-N -c {args.connections} -T {args.pgbench_seconds}):"
        f" median {tps['median']} ({tps['min']}..{tps['max']})"
        f"\nratio events/s / pgbench tps: median {median(ratios):.4f}"
        f" ({min(ratios):.4f}..{max(ratios):.4f}), 1 event per {1 / median(ratios):.1f}"
        " pgbench transactions' time"
        f"\nreceived-to-processed, pooled over the rounds (a backlog drained: mostly"
        f" queueing): p50 {percentile(pooled, 50) / 1000:.2f} s,"
        f" p99 {percentile(pooled, 99) / 1000:.2f} s"
    )
    tx_cpu = median([f["cpu_ms_per_tx"] for f in floors])
    print("CPU ms per event: " + "  ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    print(
        f"CPU ms per pgbench transaction (backends and client): {tx_cpu:.3f}; an event costs"
        f" the stack {cpu['stack'] / tx_cpu:.0f}x that (the ratio by CPU, steadier under load)"
    )
    print(
        f"load average (1 min) at the end of each phase: median {median(loads):.2f},"
        f" {min(loads):.2f}..{max(loads):.2f} on {os.cpu_count()} CPUs; processes outside"
        f" the stack, the bench and wrk used {others / wall / (os.cpu_count() or 1):.0%} of"
        " the CPUs during the rounds"
    )
    for step in steps:
        print(
            f"paced at {step['fraction']:.2f} of the sustained rate: posted"
            f" {step['ingest_rps']:.1f}/s, {step['events_per_s']:.1f} events/s,"
            f" received-to-processed p50 {step['p50_ms']:.0f} ms p99 {step['p99_ms']:.0f} ms"
        )
    verdict = "PASS" if not lost["problems"] else "FAIL"
    print(
        f"NOTHING LOST: {verdict}: {lost['events']} events by state, outbox {lost['outbox']},"
        f" {lost['accounts']} accounts, {lost['accounts_drifting']} with a non-empty recompute"
        f"\ncases: {'; '.join(lost['cases'])}\nlines at ERROR in the logs (bench/results/"
        f"e2e_logs/): {lost['errors_logged']}"
    )
    for problem in lost["problems"]:
        print(f"  LOST: {problem}")
    strip = {"latencies_ms"}
    return {
        "command": " ".join([".venv/bin/python", "bench/e2e.py", *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": dict(vars(args), cpus=os.cpu_count()),
        "events_per_s": eps,
        "pgbench_tps": tps,
        "ratio": _spread(ratios, 4),
        "received_to_processed_ms": {
            "p50": round(percentile(pooled, 50), 1),
            "p99": round(percentile(pooled, 99), 1),
        },
        "cpu_ms_per_event": cpu,
        "pgbench_cpu_ms_per_tx": round(tx_cpu, 4),
        "cpu_ratio_event_to_tx": round(cpu["stack"] / tx_cpu, 1),
        "load_average_1min": _spread(loads, 2),
        "other_cpu_share": round(others / wall / (os.cpu_count() or 1), 3),
        "rounds": [{k: v for k, v in p.items() if k not in strip} for p in rounds],
        "floors": floors,
        "steps": [{k: v for k, v in p.items() if k not in strip} for p in steps],
        "nothing_lost": dict(lost, verdict=verdict),
    }
