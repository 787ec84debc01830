"""The drift bench's measured operations on one book: the drift put back, scan() timed with
the load and the CPU of the book's backends sampled during it, candidates(), the full pass
over every account id, and drifted() one account at a time.
Imported by bench/drift.py after django.setup().
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

from django.db import connection

from bench.database import BenchError, query, scalar, sql, t, use_database
from bench.drift_book import CHUNK, NOW, SCAN_EVERY
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


CLK_TCK = os.sysconf("SC_CLK_TCK")


def backend_cpu_s() -> float:
    """CPU seconds used so far by this connection's PostgreSQL backend (same machine)."""
    pid = scalar("SELECT pg_backend_pid()")
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used so far (all CPUs, idle and
    iowait left out), from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


class DuringScan:
    """While the block runs, every SAMPLE_S: the 1-minute load average (the load printed is
    the one during the measurement), and the CPU time of every PostgreSQL backend of the
    book's database, so a backend the scan opens and closes (its reader's) counts too. A
    backend that exits loses at most its last SAMPLE_S from the count."""

    SAMPLE_S = 0.25

    def __init__(self, database: str) -> None:
        self.database = database
        self._ours: dict[int, bool] = {}  # pid -> a backend of the book (titles keep the db)

    def __enter__(self) -> DuringScan:
        self.samples = [os.getloadavg()[0]]
        self.first = self._backends()
        self.last = dict(self.first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _backends(self) -> dict[int, float]:
        found = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if pid not in self._ours:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].split()
                    # "postgres: [cluster:] user database host(port) state"
                    self._ours[pid] = title[:1] == [b"postgres:"] and (
                        self.database.encode() in title[2:4]
                    )
                if self._ours[pid]:
                    found[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                continue
        return found

    def _sample(self) -> None:
        while not self._stop.wait(self.SAMPLE_S):
            self.samples.append(os.getloadavg()[0])
            for pid, cpu in self._backends().items():
                self.first.setdefault(pid, 0.0)  # started during the block: all of it
                self.last[pid] = cpu

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])
        self.last.update(self._backends())

    @property
    def backends_cpu_s(self) -> float:
        return sum(cpu - self.first[pid] for pid, cpu in self.last.items())


def timed(fn) -> tuple[object, float, float]:
    """Result, wall seconds and CPU seconds (this process + its backend) of fn()."""
    cpu, pg = time.process_time(), backend_cpu_s()
    started = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - started
    return result, wall, time.process_time() - cpu + backend_cpu_s() - pg


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
    busy, cpu = machine_busy_s(), time.process_time()
    with DuringScan(name) as load:
        started = time.perf_counter()
        run = drift.scan()
        scan_s = time.perf_counter() - started
    # Every process of the stack: this one (all its threads) and the book's backends.
    scan_cpu = time.process_time() - cpu + load.backends_cpu_s
    # What the rest of the machine used meanwhile, in cores: 0 on a quiet machine.
    others_cores = max(0.0, (machine_busy_s() - busy - scan_cpu) / scan_s)
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
        "candidates_s": statistics.median(candidate_runs),
        "full_pass_s": pass_s,
        "full_pass_cpu_s": pass_cpu,
        "check_one_s": naive_s / len(naive_ids),
        "check_one_cpu_s": naive_cpu / len(naive_ids),
    }
