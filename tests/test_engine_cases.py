"""The dunning case through whole stories, driven by Stripe events and the test clock."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_fsm import TransitionNotAllowed

from billing_events import samples
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import test_clock as clock_service
from dunning.engine import handle
from dunning.models import AccountStanding, BadDebtEpisode, CaseState, Decision, DunningCase
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
        "level notice on the base ladder: the earliest unpaid invoice is 0 days old and the "
        "decline was soft"
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


def test_marked_uncollectible_is_bad_debt_at_once_and_climbs_then_resolves_as_written_off(
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
    # Bad debt at once, but consequences climb one rung at a time from notice.
    assert (case.state, case.level) == ("escalated", "notice")
    assert case.transitions.last().trigger == "MARKED_UNCOLLECTIBLE"
    assert BadDebtEpisode.objects.get().reason == "marked_uncollectible"

    advance(days=14)
    case.refresh_from_db()
    assert (case.state, case.level) == ("escalated", "suspended")
    assert "core_access" in restrictions(cus)

    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.subscription_event("customer.subscription.deleted", "canceled"),
    )

    case.refresh_from_db()
    assert (case.state, case.resolution) == ("resolved", "written_off")


def upgrade(cus: StripeCustomer, base: str = "price_base", addon: str = "price_addon") -> dict:
    """customer.subscription.updated for an upgrade: an add-on price joins the base plan."""
    obj = samples.subscription(
        id=cus.subscription, customer=cus.id, created=cus.t, items=[(base, 1), (addon, 1)]
    )
    previous = {"items": samples.subscription_items(cus.subscription, [(base, 1)])}
    return cus._event("customer.subscription.updated", obj, previous_attributes=previous)


def test_an_unpaid_upgrade_holds_back_the_upgrade_then_reverts_it_and_never_escalates(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    deliver_now(stripe_sender, cus, upgrade)
    deliver_failure(stripe_sender, cus, "insufficient_funds", billing_reason="subscription_update")

    advance(days=10)
    case = case_of(cus)
    assert case.level == "upgrade_restricted"
    assert restrictions(cus) == {"upgraded_features"}

    advance(days=80)

    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", "upgrade_reverted")
    assert restrictions(cus) == set()
    assert not BadDebtEpisode.objects.exists()
    assert not DunningCase.objects.filter(level__in=["suspended", "cancelled"]).exists()
    assert ("revert_subscription", cus.subscription) in [c[:2] for c in simulated_gateway.calls]
    assert simulated_gateway.subscription_items[cus.subscription] == [
        {"price": "price_base", "quantity": 1}
    ]
    assert cus.invoice_id in simulated_gateway.voided


def test_an_uncollectible_upgrade_invoice_never_puts_the_account_in_bad_debt(
    stripe_sender, test_clock, simulated_gateway
):
    """Stripe marks the upgrade invoice uncollectible on its own after its retries."""
    cus = StripeCustomer()
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.paid", invoice_id="in_base", status="paid", attempt_count=1
        ),
    )
    deliver_failure(stripe_sender, cus, "insufficient_funds", billing_reason="subscription_update")
    advance(days=20)
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.marked_uncollectible",
            status="uncollectible",
            attempt_count=4,
            billing_reason="subscription_update",
        ),
    )
    advance(days=40)

    assert not BadDebtEpisode.objects.exists()
    assert "core_access" not in restrictions(cus)
    assert "cancel_subscription" not in [c[0] for c in simulated_gateway.calls]
    assert not DunningCase.objects.filter(state="escalated").exists()


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
