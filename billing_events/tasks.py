from celery import shared_task
from django.db import DatabaseError

from billing_events import polling, processing


@shared_task(
    acks_late=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def process_webhook_event(event_id: int) -> str:
    return processing.process_event(event_id=event_id)


@shared_task(
    acks_late=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=5,
)
def process_webhook_events(event_ids: list[int]) -> list[str]:
    return [processing.process_event(event_id=event_id) for event_id in event_ids]


@shared_task(acks_late=True)
def sweep_webhook_events() -> int:
    from dunning.test_clock import advance_in_progress

    if advance_in_progress():  # the advancing test clock processes what is due itself
        return 0
    return processing.sweep()


@shared_task(acks_late=True)
def poll_stripe_events() -> int:
    """The backstop for missed webhooks; returns how many events it recovered."""
    return polling.poll_once().recovered
