"""The drift bench's measured operations on one book: the drift put back, scan() timed with
the load and the CPU of the book's backends sampled during it, candidates(), the full pass
over every account id, and drifted() one account at a time.
Imported by bench/drift.py after django.setup().
"""

from __future__ import annotations

import statistics
import time

from django.db import connection

from bench.common import median
from bench.database import BenchError, query, scalar, sql, t, use_database
from bench.drift_book import CHUNK, NOW, SCAN_EVERY
from bench.processes import DuringMeasurement, machine_busy, process_cpu_s
from billing_events.models import Account
from dunning import drift
from dunning.models import DriftScan
from dunning.policy import current_policy
from entitlements.models import Restriction


def drift_accounts() -> tuple[list[int], list[int]]:
    """The 1% that get a stale restriction, and the guarded tenth of them."""
    rows = query("SELECT account, j FROM bench_drift_dunning WHERE j %% 100 = 9 ORDER BY 1")
    return [a for a, _ in rows], [a for a, j in rows if j % 1000 == 9]


def reset(drifting: list[int]) -> None:
    """Untimed, before each scan: the drift back in, the previous rounds' scans gone. The
    drift is a restriction the engine never imposed (a restore from an old backup, say):
    every open case of the book is at `notice`, which restricts nothing, so a restriction
    gone missing would not be drift; one too many is, and the engine lifts it."""
    sql(f"DELETE FROM {t(Restriction)} WHERE account_id = ANY(%(ids)s)", {"ids": drifting})
    sql(
        f"""
        INSERT INTO {t(Restriction)} (account_id, code, level, reason, since)
        SELECT a, 'core_access', 'suspended', 'restored from an old backup',
          %(now)s - interval '1 day'
        FROM unnest(%(ids)s::bigint[]) a""",
        {"ids": drifting, "now": NOW},
    )
    sql(f"DELETE FROM {t(DriftScan)} WHERE started_at > %(at)s", {"at": NOW - SCAN_EVERY})


def timed(fn) -> tuple[object, float, float]:
    """Result, wall seconds and CPU seconds (this process + its backend) of fn()."""
    backend = scalar("SELECT pg_backend_pid()")
    cpu, pg = time.process_time(), process_cpu_s(backend)
    started = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - started
    return result, wall, time.process_time() - cpu + process_cpu_s(backend) - pg


def full_pass() -> int:
    """The baseline: every account id, in keyset chunks (what checking every account
    has to read at the very least)."""
    seen, last = 0, 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                f"SELECT id FROM {t(Account)} WHERE id > %s ORDER BY id LIMIT {CHUNK}", [last]
            )
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return seen
            seen += len(ids)
            last = ids[-1]


def check_each(ids: list[int]) -> int:
    policy = current_policy()
    found = sum(drift.drifted(account_id=pk, now=NOW, policy=policy) for pk in ids)
    if found:
        raise BenchError(f"{found} accounts not in dunning drifted")
    return len(ids)


def measure_book(name: str, expect: dict, naive_ids: list[int]) -> dict:
    use_database(name)
    drifting, guarded = drift_accounts()
    reset(drifting)
    busy, cpu = machine_busy(), time.process_time()
    with DuringMeasurement(name) as load:
        started = time.perf_counter()
        run = drift.scan()
        scan_s = time.perf_counter() - started
    # Every process of the stack: this one (all its threads) and the book's backends.
    scan_cpu = time.process_time() - cpu + load.backends_cpu_s
    # What the rest of the machine used meanwhile, in cores: 0 on a quiet machine.
    others_cores = max(0.0, (machine_busy() - busy - scan_cpu) / scan_s)
    got = {
        "candidates": run.candidates,
        "drifted": run.drifted,
        "deferred": run.deferred,
        "remediated": run.remediated,
    }
    every = expect["in_dunning"] + expect["changed"]
    # scan() should also examine the accounts changed since the previous scan; if it
    # examines only the others, it read the wrong watermark (reported, not fatal).
    missed_changed = run.candidates == expect["in_dunning"] and expect["changed"] > 0
    want = {
        "candidates": expect["in_dunning"] if missed_changed else every,
        "drifted": len(drifting),
        "deferred": len(guarded),
        "remediated": len(drifting) - len(guarded),
    }
    if got != want:
        raise BenchError(f"{name}: the scan found {got}, the book holds {want}")
    candidate_runs = []
    for _ in range(5):
        ids, wall, _ = timed(lambda: drift.candidates(since=NOW - SCAN_EVERY))
        candidate_runs.append(wall)
    if len(ids) != every:
        raise BenchError(f"{name}: candidates() gave {len(ids)}, not {every}")
    seen, pass_s, pass_cpu = timed(full_pass)
    if seen != expect["accounts"]:
        raise BenchError(f"{name}: the full pass saw {seen} accounts, not {expect['accounts']}")
    _, naive_s, naive_cpu = timed(lambda: check_each(naive_ids))
    return {
        **got,
        "candidates_with_changed": len(ids),
        "missed_changed": missed_changed,
        "scan_s": scan_s,
        "scan_cpu_s": scan_cpu,
        "scan_load": statistics.fmean(load.samples),
        "scan_load_max": max(load.samples),
        "scan_others_cores": others_cores,
        "candidates_s": median(candidate_runs),
        "full_pass_s": pass_s,
        "full_pass_cpu_s": pass_cpu,
        "check_one_s": naive_s / len(naive_ids),
        "check_one_cpu_s": naive_cpu / len(naive_ids),
    }
