from celery import shared_task
from django.db import DatabaseError

from dunning import drift, outbox, payment_sweeper, schedule, stuck
from dunning.test_clock import advance_in_progress

# A transient database fault (PostgreSQL restarting, a dropped connection) retries the task
# instead of leaving the item to its lease; the webhook tasks (`dunning.intake.tasks`) too.
DATABASE_RETRY = {
    "autoretry_for": (DatabaseError,),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "max_retries": 5,
}


@shared_task(acks_late=True)
def dispatch_outbox() -> int:
    if advance_in_progress():  # the advancing test clock runs what is due itself
        return 0
    return outbox.dispatch_due()


@shared_task(bind=True, acks_late=True, **DATABASE_RETRY)
def run_outbox_item(self, item_id: int) -> str:
    # On a retry the first try may have closed the item and died before handing the
    # account back to the engine; the retry finishes that.
    return outbox.run_item(item_id=item_id, finish_hand_back=self.request.retries > 0)


@shared_task(acks_late=True)
def run_outbox_items(item_ids: list[int]) -> list[str]:
    """The dispatcher's batch of item ids (one message per batch). What the batch's
    recomputes added (a "recovered" message, the next retry) is handed out from here when
    it ends, as `dispatch_outbox` does: no task message only to wake it, one more message
    on the pool for every batch."""
    return outbox.run_items(item_ids, dispatch=dispatch_outbox)


@shared_task(acks_late=True)
def recompute_due_cases() -> int:
    if advance_in_progress():
        return 0
    # Crashed pay-bad-debt requests are swept on the same beat entry (every
    # CASE_REVIEW_SECONDS), so one is resolved within minutes of going stale.
    resolve_crashed_payments.apply_async()
    return schedule.recompute_due_cases()


@shared_task(acks_late=True)
def detect_drift() -> int:
    if advance_in_progress():
        return 0
    return drift.scan().drifted


@shared_task(acks_late=True)
def redrive_stuck_lifting() -> int:
    if advance_in_progress():
        return 0
    return stuck.redrive_stuck_lifting()


@shared_task(acks_late=True, **DATABASE_RETRY)
def resolve_crashed_payments() -> int:
    if advance_in_progress():
        return 0
    return len(payment_sweeper.resolve_crashed_payments())
