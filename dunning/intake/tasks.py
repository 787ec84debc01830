"""The tasks that process stored webhook events: one event, a batch, and the pump.

billing_events publishes the first two by name (`billing_events.ingest`), so the app that
stores events never imports the one that acts on them.
"""

from celery import shared_task

from dunning.intake import processing
from dunning.tasks import DATABASE_RETRY
from dunning.test_clock import advance_in_progress


@shared_task(acks_late=True, **DATABASE_RETRY)
def process_webhook_event(event_id: int) -> str:
    return processing.process_event(event_id=event_id)


@shared_task(acks_late=True, **DATABASE_RETRY)
def process_webhook_events(event_ids: list[int]) -> list[str]:
    return [processing.process_event(event_id=event_id) for event_id in event_ids]


@shared_task(acks_late=True)
def sweep_webhook_events() -> int:
    if advance_in_progress():  # the advancing test clock processes what is due itself
        return 0
    return processing.sweep()
