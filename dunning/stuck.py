"""Cases stuck in `lifting`: money is in, but a side effect never completed.

Counted for the metrics gauge and the admin's "stuck" filter, and re-driven: the account's
dead or backed-off side effects are due again now (their peers may be back) and the engine
recomputes the account.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q

from core import clock
from dunning.engine import handle
from dunning.models import CaseState, DunningCase, OutboxItem
from dunning.triggers import Trigger, TriggerKind


def stuck_cases(*, now: datetime):
    threshold = now - timedelta(seconds=settings.LIFTING_STUCK_AFTER_SECONDS)
    return DunningCase.objects.filter(state=CaseState.LIFTING).filter(
        Q(last_decision__decided_at__lt=threshold)
        | Q(last_decision__isnull=True, opened_at__lt=threshold)
    )


def redrive_stuck_lifting() -> int:
    now = clock.now()
    account_ids = list(stuck_cases(now=now).values_list("account_id", flat=True))
    for account_id in account_ids:
        # Side effects that gave up, or wait out a long backoff, are tried again now (a
        # payment retry keeps its schedule: that is the retry policy, not a side effect).
        OutboxItem.objects.filter(
            account_id=account_id, status__in=[OutboxItem.Status.DEAD, OutboxItem.Status.PENDING]
        ).exclude(kind=OutboxItem.Kind.PAYMENT_RETRY).exclude(claimed_until__gt=now).update(
            status=OutboxItem.Status.PENDING, next_attempt_at=now, claimed_until=None
        )
        handle(Trigger(TriggerKind.DRIFT_DETECTED, account_id, source="beat:stuck-lifting"))
    return len(account_ids)
