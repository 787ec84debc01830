from datetime import timedelta

import pytest

from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import support
from dunning import test_clock as clock_service
from dunning.models import SupportAction
from tests.dunning_helpers import account_of, case_of, deliver_now

pytestmark = pytest.mark.django_db


def failing_customer(sender) -> StripeCustomer:
    cus = StripeCustomer()
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    return cus


def test_recompute_is_audited_with_its_actor_and_empty_diff(stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)

    outcome = support.recompute(account_id=account_of(cus).pk, actor="alice")

    assert outcome.changes == ()
    action = SupportAction.objects.get()
    assert (action.actor, action.action, action.result["changes"]) == ("alice", "recompute", [])


def test_pause_stops_retries_and_escalation_until_it_ends(
    stripe_sender, test_clock, simulated_gateway
):
    cus = failing_customer(stripe_sender)
    until = clock.now() + timedelta(days=10)

    support.pause_dunning(
        account_id=account_of(cus).pk, until=until, reason="promised to pay", actor="bob"
    )
    clock_service.advance(seconds=9 * 86400)

    case = case_of(cus)
    assert simulated_gateway.calls == []
    assert case.level == "notice"
    assert case.next_retry_at is None
    assert "retries paused by support" in case.last_decision.summary

    clock_service.advance(seconds=2 * 86400)  # the pause is over: the overdue retry runs
    assert len(simulated_gateway.calls) >= 1
    assert case_of(cus).level == "notice"  # the held-back step is announced first

    clock_service.advance(seconds=3 * 86400)

    assert len(simulated_gateway.calls) >= 1
    assert case_of(cus).level == "premium_restricted"


def test_grace_holds_the_level_but_retries_go_on(stripe_sender, test_clock, simulated_gateway):
    cus = failing_customer(stripe_sender)
    until = clock.now() + timedelta(days=20)

    support.extend_grace(
        account_id=account_of(cus).pk, until=until, reason="hospital", actor="carol"
    )
    clock_service.advance(seconds=15 * 86400)

    case = case_of(cus)
    assert case.level == "notice"
    assert len(simulated_gateway.calls) == 5  # the soft schedule's days 1, 3, 5, 8 and 12
    assert "held at notice by support" in case.last_decision.summary


def test_actions_need_an_open_case(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_now(stripe_sender, cus, lambda c: c.customer_updated("pm_1"))

    with pytest.raises(support.NoOpenCase):
        support.pause_dunning(
            account_id=account_of(cus).pk, until=clock.now(), reason="x", actor="dan"
        )
    assert SupportAction.objects.count() == 0
