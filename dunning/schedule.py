"""Time passing: cases whose ladder moves at `next_review_at` are recomputed then."""

from datetime import datetime

from django.db.models import QuerySet

from core import clock
from dunning.engine import handle
from dunning.models import OPEN_STATES, DunningCase
from dunning.triggers import Trigger, TriggerKind


def due_reviews(now: datetime) -> QuerySet:
    """The open cases whose review is due at `now`."""
    return DunningCase.objects.filter(state__in=OPEN_STATES, next_review_at__lte=now)


def recompute_due_cases(*, limit: int = 1000) -> int:
    now = clock.now()
    account_ids = list(
        due_reviews(now).order_by("next_review_at").values_list("account_id", flat=True)[:limit]
    )
    for account_id in account_ids:
        handle(Trigger(kind=TriggerKind.TIME_PASSED, account_id=account_id, source="beat:review"))
    return len(account_ids)
