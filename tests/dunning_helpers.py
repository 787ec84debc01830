"""Driving the engine through the real webhook path on the project's test clock."""

from datetime import datetime

from billing_events.models import Account
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import outbox
from dunning.models import DunningCase
from tests.conftest import StripeSender
from tests.events import deliver


def on_stripe_clock(customer: StripeCustomer) -> StripeCustomer:
    """Make the customer's Stripe clock read the project clock."""
    customer.t = int(clock.now().timestamp())
    return customer


def deliver_now(sender: StripeSender, customer: StripeCustomer, *builders) -> None:
    """Build each event at the project clock's time and deliver it; then drain the outbox."""
    events = []
    for build in builders:
        on_stripe_clock(customer)
        events.append(build(customer))
    deliver(sender, *events)
    outbox.drain()


def case_of(customer: StripeCustomer) -> DunningCase:
    return DunningCase.objects.filter(account__stripe_customer_id=customer.id).latest("pk")


def account_of(customer: StripeCustomer) -> Account:
    return Account.objects.get(stripe_customer_id=customer.id)


def days_between(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() / 86400
