"""What bench/e2e.py reads back from the bench's database: a round's progress and timings
from the stored events, and the "nothing lost" verdict. Import after django.setup()."""

from __future__ import annotations

from collections import Counter

from django.db import connection

from billing_events.models import Account
from core import clock
from dunning.compute import compute
from dunning.diff import diff
from dunning.policy import current_policy
from dunning.snapshot_batch import read_snapshots

EVENTS = "billing_events_webhookevent"
OUTBOX = "dunning_outboxitem"
DONE_STATES = ("processed", "ignored")
OVERDUE = f"SELECT count(*) FROM {OUTBOX} WHERE status = 'pending' AND next_attempt_at <= now()"


def _like(tag: str) -> str:
    return f"evt\\_{tag}\\_%"


def _rows(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def progress(tag: str) -> dict:
    """The round's stored events by state, and the outbox's items due or running now."""
    states = dict(
        _rows(
            f"SELECT status, count(*) FROM {EVENTS} WHERE stripe_event_id LIKE %s GROUP BY 1",
            [_like(tag)],
        )
    )
    [(due,)] = _rows(OVERDUE)
    stored = sum(states.values())
    done = sum(states.get(s, 0) for s in DONE_STATES)
    return {"stored": stored, "done": done, "states": states, "outbox_due": due}


def timings(tag: str) -> dict:
    """Received-to-processed of each of the round's events (ms), the round's span from the
    first event received to the last event processed or the last side effect of its
    accounts finished, and those side effects by kind and state."""
    latencies = [
        ms
        for (ms,) in _rows(
            f"SELECT extract(epoch FROM processed_at - received_at) * 1000 FROM {EVENTS}"
            " WHERE stripe_event_id LIKE %s AND processed_at IS NOT NULL",
            [_like(tag)],
        )
    ]
    [(first, last_event)] = _rows(
        f"SELECT min(received_at), max(processed_at) FROM {EVENTS} WHERE stripe_event_id LIKE %s",
        [_like(tag)],
    )
    effects = _rows(
        f"SELECT o.kind, o.status, count(*), max(o.completed_at) FROM {OUTBOX} o"
        " JOIN billing_events_account a ON a.id = o.account_id"
        " WHERE a.stripe_customer_id LIKE %s AND o.created_at >= %s GROUP BY 1, 2",
        [f"cus\\_{tag}n%", first],
    )
    ends = [last_event, *(row[3] for row in effects if row[3] is not None)]
    last = max(end for end in ends if end is not None)
    return {
        "latencies_ms": [float(ms) for ms in latencies],
        "span_s": (last - first).total_seconds(),
        "events_span_s": (last_event - first).total_seconds(),
        "effects": {f"{kind}:{status}": n for kind, status, n, _ in effects},
    }


def recompute_diffs() -> dict[str, list[str]]:
    """Every account recomputed now, read-only (what the drift scan does, without its
    remediation): customer id -> the fields a recompute would change, for those it would."""
    now, policy = clock.now(), current_policy()
    ids = list(Account.objects.order_by("pk").values_list("pk", flat=True))
    names = dict(Account.objects.values_list("pk", "stripe_customer_id"))
    drifting: dict[str, list[str]] = {}
    for start in range(0, len(ids), 500):
        for account_id, snapshot in read_snapshots(
            ids[start : start + 500], now=now, policy=policy
        ).items():
            if changes := diff(snapshot, compute(snapshot, now, policy), now):
                drifting[names[account_id]] = sorted({f"{c.store}.{c.field}" for c in changes})
    return drifting


def nothing_lost(posted_ids: int) -> dict:
    """The verdict's inputs, over the whole bench database: every distinct event posted
    is stored once and processed (or ignored by type), no side effect is overdue or
    dead, and a recompute of every account would change nothing."""
    states = dict(_rows(f"SELECT status, count(*) FROM {EVENTS} GROUP BY 1"))
    [(duplicated,)] = _rows(f"SELECT count(*) - count(DISTINCT stripe_event_id) FROM {EVENTS}")
    outbox = Counter(dict(_rows(f"SELECT status, count(*) FROM {OUTBOX} GROUP BY 1")))
    [(overdue,)] = _rows(OVERDUE)
    stored = sum(states.values())
    drifting = recompute_diffs()
    cases = _rows(
        "SELECT state, resolution, count(*) FROM dunning_dunningcase GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    problems = []
    if stored != posted_ids:
        problems.append(f"{posted_ids} distinct events posted, {stored} stored")
    if duplicated:
        problems.append(f"{duplicated} events stored twice")
    if pending := stored - sum(states.get(s, 0) for s in DONE_STATES):
        problems.append(f"{pending} events not processed: {states}")
    if overdue:
        problems.append(f"{overdue} outbox items overdue")
    if outbox.get("dead"):
        problems.append(f"{outbox['dead']} outbox items dead")
    if drifting:
        sample = dict(list(drifting.items())[:5])
        problems.append(f"{len(drifting)} accounts whose recompute is not empty, e.g. {sample}")
    return {
        "events": states,
        "outbox": dict(outbox),
        "accounts": Account.objects.count(),
        "accounts_drifting": len(drifting),
        "cases": [f"{state}/{resolution or '-'}: {n}" for state, resolution, n in cases],
        "problems": problems,
    }
