"""Drift detection: find accounts whose stores disagree and re-drive them, with a time
guard so remediation never clobbers a payment in flight.

    scan()
      1. candidates: accounts in dunning or touched since the last scan, and accounts
         holding anything dunning put there (restrictions, a standing that is not `good`
         or not acknowledged, an open bad-debt episode). Indexed lookups only, so the cost
         grows with those accounts, not with all accounts.
      2. for each, compute what the engine would change, without the lock. No change: fine.
      3. a change while a payment is in flight, or with payment activity within
         DRIFT_GUARD_SECONDS: leave it alone this time (the next scan reconsiders it).
      4. otherwise fire DRIFT_DETECTED: the engine locks, recomputes and applies.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from billing_events.models import Account, PaymentAttempt, WebhookEvent
from dunning import clock
from dunning.compute import compute
from dunning.engine import diff, handle, read_snapshot
from dunning.models import (
    OPEN_STATES,
    AccountStanding,
    BadDebtEpisode,
    BadDebtPayment,
    DriftScan,
    DunningCase,
    OutboxItem,
)
from dunning.policy import Policy, current_policy
from dunning.triggers import Trigger, TriggerKind
from entitlements.models import Restriction


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


def guarded(*, account_id: int, now: datetime) -> str | None:
    """Why remediation must leave this account alone right now, if it must."""
    window = now - timedelta(seconds=settings.DRIFT_GUARD_SECONDS)
    if OutboxItem.objects.filter(
        account_id=account_id,
        kind=OutboxItem.Kind.PAYMENT_RETRY,
        status=OutboxItem.Status.PENDING,
        claimed_until__gt=now,
    ).exists():
        return "a payment retry is in flight"
    if BadDebtPayment.objects.filter(account_id=account_id, status="processing").exists():
        return "a bad-debt payment is in flight"
    if PaymentAttempt.objects.filter(account_id=account_id, attempted_at__gt=window).exists():
        return "payment activity within the guard window"
    if WebhookEvent.objects.filter(
        account_id=account_id, received_at__gt=window, type__startswith="invoice."
    ).exists():
        return "invoice activity within the guard window"
    return None


def drifted(*, account_id: int, now: datetime, policy: Policy) -> bool:
    """Would a recompute change anything? Read-only: nothing is locked or written."""
    with transaction.atomic():
        _, snapshot = read_snapshot(account_id=account_id, now=now, policy=policy, lock=False)
    return bool(diff(snapshot, compute(snapshot, now, policy), now))


def scan() -> DriftScan:
    now = clock.now()
    policy = current_policy()
    # The last scan that finished: a crashed one must not move the watermark.
    since = (
        DriftScan.objects.filter(finished_at__isnull=False)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    run = DriftScan.objects.create(started_at=now)
    for account_id in sorted(candidates(since=since)):
        run.candidates += 1
        try:
            if not drifted(account_id=account_id, now=now, policy=policy):
                continue
        except Account.DoesNotExist:
            continue
        run.drifted += 1
        if guarded(account_id=account_id, now=now):
            run.deferred += 1
            continue
        outcome = handle(Trigger(TriggerKind.DRIFT_DETECTED, account_id, source="beat:drift"))
        run.remediated += bool(outcome.changes)
    run.finished_at = clock.now()
    run.save()
    return run
