"""Delivering scenario events through the real webhook and the worker's code path."""

from billing_events.models import WebhookEvent
from billing_events.scenarios import StripeCustomer as Customer
from dunning.intake.processing import process_event
from tests.conftest import StripeSender

__all__ = ["Customer", "deliver"]


def deliver(sender: StripeSender, *events: dict) -> list[str]:
    """Deliver through the real webhook, then run what the worker runs for each."""
    statuses = []
    for event in events:
        response = sender.send(event, timestamp=None)
        assert response.status_code == 200, response.content
        stored = WebhookEvent.objects.get(stripe_event_id=event["id"])
        statuses.append(process_event(event_id=stored.pk))
    return statuses
