"""The dunning case through whole stories, driven by Stripe events and the test clock."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_fsm import TransitionNotAllowed

from billing_events.scenarios import StripeCustomer
from dunning import clock
from dunning import test_clock as clock_service
from dunning.engine import handle
from dunning.models import AccountStanding, CaseState, Decision, DunningCase
from dunning.triggers import Trigger, TriggerKind
from entitlements.models import Restriction
from tests.dunning_helpers import account_of, case_of, deliver_now

pytestmark = pytest.mark.django_db


def deliver_failure(
    sender, cus, decline_code, attempt=1, advice_code=None, charge_id=None, **invoice_fields
):
    """A failed charge and the invoice.payment_failed that goes with it, at the clock's time."""
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event(
            "charge.failed",
            charge_id or f"ch_{c.id}_{attempt}",
            decline_code=decline_code,
            advice_code=advice_code,
            invoice_id=invoice_fields.get("invoice_id"),
        ),
        lambda c: c.invoice_event(
            "invoice.payment_failed", attempt_count=attempt, **invoice_fields
        ),
    )


def restrictions(cus) -> set[str]:
    return set(
        Restriction.objects.filter(account__stripe_customer_id=cus.id).values_list(
            "code", flat=True
        )
    )


def test_soft_decline_opens_a_retrying_case_with_an_explanation(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds")

    case = case_of(cus)
    assert (case.state, case.level, case.decline_class) == ("retrying", "notice", "soft")
    assert case.amount_overdue == {"usd": 2000}
    assert case.last_decision.summary.startswith(
        "level notice because the earliest unpaid invoice is 0 days old and the decline was soft"
    )
    rule = case.last_decision.explanation[0]
    assert rule["rule"] == "ladder" and rule["facts"]["decline_class"] == "soft"
    transition = case.transitions.get()
    assert (transition.from_state, transition.to_state) == ("", "retrying")
    assert transition.trigger == "PAYMENT_FAILED" and transition.actor.startswith("stripe:evt_")


def test_hard_decline_waits_for_the_customer_until_the_card_is_updated(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "expired_card")
    assert case_of(cus).state == CaseState.AWAITING_CUSTOMER

    advance(hours=30)
    deliver_now(stripe_sender, cus, lambda c: c.customer_updated("pm_new"))

    case = case_of(cus)
    assert case.state == CaseState.RETRYING
    assert case.transitions.last().trigger == "PAYMENT_METHOD_UPDATED"


def test_fraud_decline_is_never_retried_and_waits_for_the_customer(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "stolen_card")

    assert (case_of(cus).state, case_of(cus).decline_class) == ("awaiting_customer_action", "fraud")


def test_advice_code_overrides_the_decline_class(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds", advice_code="do_not_try_again")

    assert case_of(cus).state == CaseState.AWAITING_CUSTOMER


def test_ladder_climbs_with_time_and_each_step_is_decided_on_its_day(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds")

    report = advance(days=31)

    case = case_of(cus)
    assert (case.state, case.level) == ("escalated", "suspended")
    assert report.ran["case_reviews"] == 3
    levels = [
        (change["to"], (d.decided_at - test_clock).days)
        for d in Decision.objects.filter(trigger="TIME_PASSED").order_by("pk")
        for change in d.changes
        if change["field"] == "level"
    ]
    assert levels == [("premium_restricted", 7), ("read_only", 14), ("suspended", 30)]
    assert restrictions(cus) == {"premium_features", "write_access", "core_access"}
    standing = AccountStanding.objects.get(account=account_of(cus))
    assert (standing.requested, standing.acknowledged) == ("suspended", "suspended")


def test_early_failure_restricts_premium_but_keeps_core_access(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds")
    advance(days=8)

    assert restrictions(cus) == {"premium_features"}


def test_money_in_lifts_everything_then_resolves_as_paid(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds")
    advance(days=15)
    assert restrictions(cus) == {"premium_features", "write_access"}

    charge = lambda c: c.charge_event("charge.succeeded", "ch_ok", status="succeeded")  # noqa: E731
    paid = lambda c: c.invoice_event("invoice.paid", status="paid", attempt_count=2)  # noqa: E731
    deliver_now(stripe_sender, cus, charge, paid)

    case = case_of(cus)
    assert (case.state, case.resolution, case.level) == ("resolved", "paid", "none")
    assert restrictions(cus) == set()
    assert [t.to_state for t in case.transitions.all()][-2:] == ["lifting", "resolved"]
    standing = AccountStanding.objects.get(account=account_of(cus))
    assert (standing.requested, standing.acknowledged) == ("good", "good")


@pytest.mark.parametrize(
    "type, status, extra, resolution",
    [
        ("invoice.paid", "paid", {"paid_out_of_band": True}, "paid_out_of_band"),
        ("invoice.voided", "void", {}, "voided"),
    ],
)
def test_resolution_says_what_really_happened(
    stripe_sender, test_clock, type, status, extra, resolution
):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds")

    deliver_now(
        stripe_sender, cus, lambda c: c.invoice_event(type, status=status, attempt_count=1, **extra)
    )

    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", resolution)
    assert case.resolution != "paid"


def test_marked_uncollectible_escalates_then_cancellation_resolves_as_written_off(
    stripe_sender, test_clock
):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "generic_decline")
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.marked_uncollectible", status="uncollectible", attempt_count=1
        ),
    )
    case = case_of(cus)
    assert (case.state, case.level) == ("escalated", "suspended")
    assert case.transitions.last().trigger == "MARKED_UNCOLLECTIBLE"

    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.subscription_event("customer.subscription.deleted", "canceled"),
    )

    case.refresh_from_db()
    assert (case.state, case.resolution) == ("resolved", "written_off")


def test_failed_upgrade_invoice_only_restricts_the_upgrade_however_long_it_stays_unpaid(
    stripe_sender, test_clock
):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds", billing_reason="subscription_update")

    advance(days=90)

    case = case_of(cus)
    # retried on the soft schedule until exhausted, and never escalated
    assert (case.state, case.level) == ("awaiting_customer_action", "upgrade_restricted")
    assert restrictions(cus) == {"upgraded_features"}


def test_a_second_recompute_writes_nothing(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds")
    account = account_of(cus)

    with CaptureQueriesContext(connection) as queries:
        outcome = handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account.pk, source="support:alice"))

    assert outcome.changes == ()
    writes = [q["sql"] for q in queries if q["sql"].split()[0] in {"INSERT", "UPDATE", "DELETE"}]
    assert writes == []


def test_case_state_only_changes_through_its_transitions(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds")
    case = DunningCase.objects.get()

    with pytest.raises(AttributeError):
        case.state = CaseState.RESOLVED
    case.resolve()
    with pytest.raises(TransitionNotAllowed):
        case.retry()


def test_a_new_failure_after_resolution_opens_a_new_case(stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_failure(stripe_sender, cus, "insufficient_funds")
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event("invoice.paid", status="paid", attempt_count=2),
    )
    advance(days=30)

    deliver_failure(stripe_sender, cus, "expired_card", invoice_id="in_next", charge_id="ch_next")

    cases = list(DunningCase.objects.order_by("pk").values_list("state", "resolution"))
    assert cases == [("resolved", "paid"), ("awaiting_customer_action", "")]


def test_clock_advance_helper_moves_the_project_clock(test_clock):
    advance(days=2)
    assert clock.now() - test_clock == timedelta(days=2)


def advance(**delta):
    return clock_service.advance(seconds=timedelta(**delta).total_seconds())
