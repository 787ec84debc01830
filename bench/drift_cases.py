"""The drift bench's books: the big one built (its SQL in drift_book, the cases opened and
settled by the real engine in worker processes), the small one copied from it, and whether a
previous run's books can be reused. Imported by bench/drift.py after django.setup().
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time

from django.apps import apps
from django.db import connection

from bench.database import (
    BenchError,
    admin,
    database_exists,
    query,
    scalar,
    schema_mismatch,
    sql,
    t,
    use_database,
)
from bench.drift_book import ENGINE_CHUNK, NOW, SMALL_FACTOR, base_rows, history_rows, log
from billing_events.models import Account, Invoice, PaymentAttempt, WebhookEvent
from dunning import drift
from dunning.compute import compute
from dunning.diff import diff
from dunning.engine import handle
from dunning.models import (
    OPEN_STATES,
    AccountStanding,
    CaseInvoice,
    CaseTransition,
    DriftScan,
    DunningCase,
    OutboxItem,
)
from dunning.policy import current_policy
from dunning.snapshot_batch import read_snapshots
from dunning.triggers import Trigger, TriggerKind
from entitlements.models import Restriction


def build_big(n: int, step: int) -> dict:
    """The big book (see bench/drift.py's docstring); returns build timings."""
    p, timings = base_rows(n, step)
    # The engine opens the cases: what it writes is what a scan compares against.
    started = time.perf_counter()
    ids = [row[0] for row in query("SELECT account FROM bench_drift_dunning ORDER BY account")]
    run_engine("engine", open_cases, ids)
    timings["engine"] = round(time.perf_counter() - started, 2)
    # Standings acknowledged (Account Management answered); cases opened at the failure.
    sql(
        f"""
        UPDATE {t(OutboxItem)} SET status = 'done', completed_at = %(now)s, attempts = 1
          WHERE kind = 'account_standing' AND status = 'pending';
        UPDATE {t(AccountStanding)} SET acknowledged = requested, acknowledged_at = %(now)s;
        UPDATE {t(DunningCase)} c SET opened_at = d.first_fail
          FROM bench_drift_dunning d WHERE c.account_id = d.account""",
        p,
    )
    # The engine planned the notices of a case opened at NOW; opened at the failure, some
    # are planned again. Recompute until it would change nothing: the book is then a fixed
    # point, and a scan finds exactly the drift put in before it.
    started = time.perf_counter()
    for _ in range(3):
        moving = unsettled(ids)
        log(f"  settle: the engine would still change {len(moving):,} accounts", started)
        if not moving:
            break
        run_engine("settle", recompute, moving)
    else:
        raise BenchError(f"the engine still changes {len(moving)} accounts after 3 passes")
    timings["settle"] = round(time.perf_counter() - started, 2)
    history_rows(p, step, timings)
    return timings


def reusable(name: str, book: dict) -> bool:
    """--reuse: the database exists, matches the models and holds this very book."""
    if not database_exists(name):
        return False
    use_database(name)
    if schema_mismatch():
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('bench_drift_book')")
        if cursor.fetchone()[0] is None:
            return False
        cursor.execute("SELECT book FROM bench_drift_book")
        row = cursor.fetchone()
    return row is not None and json.loads(row[0]) == book


def run_engine(label: str, work, ids: list[int]) -> None:
    """`work` over chunks of `ids` in worker processes, one per CPU."""
    started = time.perf_counter()
    workers = int(os.environ.get("BENCH_ENGINE_WORKERS", "0")) or os.cpu_count() or 1
    connection.close()  # each forked worker opens its own
    done = 0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        chunks = [ids[i : i + ENGINE_CHUNK] for i in range(0, len(ids), ENGINE_CHUNK)]
        for count in pool.imap_unordered(work, chunks):
            done += count
            if done % 5000 < ENGINE_CHUNK or done == len(ids):
                log(f"  {label} ({workers} processes): {done:,}/{len(ids):,} in dunning", started)


def unsettled(ids: list[int]) -> list[int]:
    """The accounts a recompute would change now (read as the scan reads them)."""
    policy, moving = current_policy(), []
    for start in range(0, len(ids), drift.BATCH):
        snapshots = read_snapshots(ids[start : start + drift.BATCH], now=NOW, policy=policy)
        moving += [a for a, s in snapshots.items() if diff(s, compute(s, NOW, policy), NOW)]
    return sorted(moving)


def recompute(account_ids: list[int]) -> int:
    """In a worker process: one more recompute of each account."""
    for account_id in account_ids:
        handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id, source="bench"))
    connection.close()
    return len(account_ids)


def open_cases(account_ids: list[int]) -> int:
    """In a worker process: the engine's first recompute of each account opens its case."""
    for account_id in account_ids:
        outcome = handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id, source="bench"))
        if not outcome.changes:
            raise BenchError(f"account {account_id}: the engine opened no case")
    connection.close()
    return len(account_ids)


def make_small(book: str, big: str, small: str) -> float:
    """The small book: a copy of the big one without the accounts whose id is not a
    multiple of SMALL_FACTOR (their rows deleted table by table, FK triggers off)."""
    started = time.perf_counter()
    use_database(small)
    connection.close()
    admin(f'DROP DATABASE IF EXISTS "{small}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{small}" TEMPLATE "{big}"')
    p = {"k": SMALL_FACTOR}
    sql("DELETE FROM bench_drift_book")  # written back once the small book is complete
    sql("SET session_replication_role = replica")  # no FK triggers: checked below
    sql(
        f"""
        DELETE FROM {t(CaseInvoice)} WHERE case_id IN
          (SELECT id FROM {t(DunningCase)} WHERE account_id %% %(k)s <> 0);
        DELETE FROM {t(CaseTransition)} WHERE case_id IN
          (SELECT id FROM {t(DunningCase)} WHERE account_id %% %(k)s <> 0)""",
        p,
    )
    children = [
        m
        for m in apps.get_models()
        if any(
            f.is_relation and f.related_model is Account and f.column == "account_id"
            for f in m._meta.concrete_fields
        )
    ]
    for model in children:
        sql(f"DELETE FROM {t(model)} WHERE account_id %% %(k)s <> 0", p)
    sql(f"DELETE FROM {t(Account)} WHERE id %% %(k)s <> 0", p)
    sql("DELETE FROM bench_drift_dunning WHERE account %% %(k)s <> 0", p)
    sql("SET session_replication_role = DEFAULT")
    orphans = dangling_references()
    if orphans:
        raise BenchError(f"the small book has dangling references: {orphans}")
    sql("VACUUM FULL ANALYZE")
    sql("INSERT INTO bench_drift_book VALUES (%(book)s)", {"book": book})
    return time.perf_counter() - started


def dangling_references() -> list[str]:
    """Every foreign key of every model: rows pointing at a missing row."""
    found = []
    for model in apps.get_models():
        for f in model._meta.concrete_fields:
            if not f.is_relation or f.related_model is None:
                continue
            target = f.related_model
            count = scalar(
                f"SELECT count(*) FROM {t(model)} x LEFT JOIN {t(target)} y "
                f"ON y.{target._meta.pk.column} = x.{f.column} "
                f"WHERE x.{f.column} IS NOT NULL AND y.{target._meta.pk.column} IS NULL"
            )
            if count:
                found.append(f"{model._meta.db_table}.{f.column}: {count}")
    return found


def book_summary() -> dict:
    """What is in the current book (untimed, after the build)."""
    open_states = [str(s) for s in OPEN_STATES]
    cases = query(
        f"SELECT state, level, count(*) FROM {t(DunningCase)} WHERE state = ANY(%s) "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        [open_states],
    )
    return {
        "accounts": scalar(f"SELECT count(*) FROM {t(Account)}"),
        "in_dunning": scalar("SELECT count(*) FROM bench_drift_dunning"),
        "open_cases": {f"{state} {level}": count for state, level, count in cases},
        "rows": {
            model._meta.model_name: scalar(f"SELECT count(*) FROM {t(model)}")
            for model in (
                Account,
                Invoice,
                PaymentAttempt,
                WebhookEvent,
                DunningCase,
                AccountStanding,
                Restriction,
                DriftScan,
            )
        },
        "size_mb": round(scalar("SELECT pg_database_size(current_database())") / 2**20),
    }
