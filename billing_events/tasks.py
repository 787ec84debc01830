from celery import shared_task

from billing_events import polling


@shared_task(acks_late=True)
def poll_stripe_events() -> int:
    """The backstop for missed webhooks; returns how many events it recovered."""
    return polling.poll_once().recovered
