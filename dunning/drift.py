"""Drift detection: find accounts whose stores disagree and re-drive them, with a time
guard so remediation never clobbers a payment in flight.

    scan()
      1. candidates: accounts in dunning or touched since the last scan, and accounts
         holding anything dunning put there (restrictions, a standing that is not `good`
         or not acknowledged, an open bad-debt episode). Indexed lookups only, so the cost
         grows with those accounts, not with all accounts.
      2. read them in batches of BATCH (`snapshot_batch`: ten statements a batch, no lock)
         and compute, in memory, what the engine would change. No change: fine.
      3. a change while a payment is in flight, or with payment activity within
         DRIFT_GUARD_SECONDS: leave it alone this time (the next scan reconsiders it).
      4. otherwise fire DRIFT_DETECTED: the engine locks, recomputes and applies.
"""

from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import F, Q

from billing_events.models import PaymentAttempt, WebhookEvent
from core import clock
from dunning.compute import compute
from dunning.diff import diff
from dunning.engine import handle, read_snapshot
from dunning.models import (
    OPEN_STATES,
    AccountStanding,
    BadDebtEpisode,
    BadDebtPayment,
    DriftScan,
    DunningCase,
    OutboxItem,
)
from dunning.policy import Policy
from dunning.policy_versions import cached_active, policy_for
from dunning.snapshot import Snapshot
from dunning.snapshot_batch import read_snapshots
from dunning.triggers import Trigger, TriggerKind
from entitlements.models import Restriction

# Accounts read per batch: ten statements each whatever its size; big enough that the round
# trips stop mattering, small enough that a batch's rows stay a few megabytes.
BATCH = 500


def candidates(*, since: datetime | None) -> set[int]:
    ids: set[int] = set()
    ids.update(
        DunningCase.objects.filter(state__in=OPEN_STATES).values_list("account_id", flat=True)
    )
    ids.update(Restriction.objects.values_list("account_id", flat=True).distinct())
    ids.update(
        AccountStanding.objects.filter(
            ~Q(requested="good") | ~Q(acknowledged=F("requested"))
        ).values_list("account_id", flat=True)
    )
    ids.update(
        BadDebtEpisode.objects.filter(exited_at__isnull=True).values_list("account_id", flat=True)
    )
    if since is not None:
        ids.update(
            WebhookEvent.objects.filter(processed_at__gte=since, account__isnull=False)
            .values_list("account_id", flat=True)
            .distinct()
        )
    return ids


def guards(account_ids: Collection[int], *, now: datetime) -> dict[int, str]:
    """Why remediation must leave each of these accounts alone right now, for those it
    must: four statements whatever the number of accounts."""
    window = now - timedelta(seconds=settings.DRIFT_GUARD_SECONDS)
    checks = (
        (
            "a payment retry is in flight",
            OutboxItem.objects.filter(
                kind=OutboxItem.Kind.PAYMENT_RETRY,
                status=OutboxItem.Status.PENDING,
                claimed_until__gt=now,
            ),
        ),
        ("a bad-debt payment is in flight", BadDebtPayment.objects.filter(status="processing")),
        (
            "payment activity within the guard window",
            PaymentAttempt.objects.filter(attempted_at__gt=window),
        ),
        (
            "invoice activity within the guard window",
            WebhookEvent.objects.filter(received_at__gt=window, type__startswith="invoice."),
        ),
    )
    reasons: dict[int, str] = {}
    for reason, rows in checks:
        # The first reason that holds is the one given, as when each was asked in turn.
        left = set(account_ids) - reasons.keys()
        if not left:
            break
        held = rows.filter(account_id__in=left).values_list("account_id", flat=True)
        reasons.update((account_id, reason) for account_id in held.distinct())
    return reasons


def guarded(*, account_id: int, now: datetime) -> str | None:
    """Why remediation must leave this account alone right now, if it must."""
    return guards([account_id], now=now).get(account_id)


def drifted(*, account_id: int, now: datetime, policy: Policy) -> bool:
    """Would a recompute change anything? Read-only: nothing is locked or written."""
    with transaction.atomic():
        _, snapshot = read_snapshot(account_id=account_id, now=now, policy=policy, lock=False)
    return bool(diff(snapshot, compute(snapshot, now, policy_for(snapshot)), now))


def _read_ahead(
    accounts: list[int], *, now: datetime, policy: Policy
) -> Iterator[tuple[list[int], dict[int, Snapshot]]]:
    """The candidates batch by batch, with their snapshots (gone accounts left out). The
    next batch is read on a second connection while the caller computes this one, so the
    database's time hides behind the compute's. Inside a transaction (the tests) a second
    connection would not see its writes: there, and on SQLite, one batch after the other."""
    batches = [accounts[start : start + BATCH] for start in range(0, len(accounts), BATCH)]
    if connection.in_atomic_block or connection.vendor != "postgresql" or len(batches) < 2:
        for batch in batches:
            yield batch, read_snapshots(batch, now=now, policy=policy)
        return

    def read(batch: list[int]) -> dict[int, Snapshot]:
        return read_snapshots(batch, now=now, policy=policy)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift-read") as reader:
        try:
            ahead = reader.submit(read, batches[0])
            for number, batch in enumerate(batches):
                snapshots = ahead.result()
                if number + 1 < len(batches):
                    ahead = reader.submit(read, batches[number + 1])
                yield batch, snapshots
        finally:
            reader.submit(connections.close_all)  # the reader thread's own connection


def scan() -> DriftScan:
    now = clock.now()
    policy = cached_active()  # how far back to read; each case computes on its own version
    # The last scan that finished: a crashed one must not move the watermark.
    since = (
        DriftScan.objects.filter(finished_at__isnull=False)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    run = DriftScan.objects.create(started_at=now)
    for batch, snapshots in _read_ahead(sorted(candidates(since=since)), now=now, policy=policy):
        run.candidates += len(batch)
        drifting = [
            account_id
            for account_id in batch
            if account_id in snapshots
            and diff(
                snapshots[account_id],
                compute(snapshots[account_id], now, policy_for(snapshots[account_id])),
                now,
            )
        ]
        run.drifted += len(drifting)
        held = guards(drifting, now=now) if drifting else {}
        run.deferred += len(held)
        for account_id in drifting:
            if account_id in held:
                continue
            outcome = handle(Trigger(TriggerKind.DRIFT_DETECTED, account_id, source="beat:drift"))
            run.remediated += bool(outcome.changes)
    run.finished_at = clock.now()
    run.save()
    return run
