from celery import shared_task
from django.db import DatabaseError

from dunning import drift, outbox, schedule, stuck


@shared_task(acks_late=True)
def dispatch_outbox() -> int:
    return outbox.dispatch_due()


@shared_task(
    acks_late=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def run_outbox_item(item_id: int) -> str:
    return outbox.run_item(item_id=item_id)


@shared_task(acks_late=True)
def recompute_due_cases() -> int:
    return schedule.recompute_due_cases()


@shared_task(acks_late=True)
def detect_drift() -> int:
    return drift.scan().drifted


@shared_task(acks_late=True)
def redrive_stuck_lifting() -> int:
    return stuck.redrive_stuck_lifting()
