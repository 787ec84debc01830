import pytest
from tests.test_support_actions import failing_customer
from tests.dunning_helpers import account_of, case_of
from dunning.models import *
from billing_events.models import *
from entitlements.models import Restriction
from dunning import test_clock as clock_service
pytestmark = pytest.mark.django_db

def test_explore(stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    clock_service.advance(seconds=9 * 86400)
    acc = account_of(cus)
    case = case_of(cus)
    print(vars(case))
    for d in Decision.objects.all(): print(d.trigger, d.actor, d.decided_at, d.summary, d.explanation, d.changes)
    for t in CaseTransition.objects.all(): print(vars(t))
    for o in OutboxItem.objects.all(): print(vars(o))
    for o in OutcomeEvent.objects.all(): print(vars(o))
    for o in Restriction.objects.all(): print(vars(o))
    for o in PaymentAttempt.objects.all(): print(vars(o))
    for o in WebhookEvent.objects.all(): print(o.type, o.status, o.stripe_created, o.received_at, o.account_id)
    for o in Invoice.objects.all(): print(vars(o))
