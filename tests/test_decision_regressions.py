"""Regression tests for the defects found from outside (issue #11), through signed webhooks,
the test clock, and Stripe's API faked on loopback where the defect is about Stripe."""

from datetime import timedelta

import pytest

from billing_events.models import PaymentAttempt
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import outbox, outbox_items
from dunning import test_clock as clock_service
from dunning.models import DunningCase, OutboxItem, TestClock
from tests.dunning_helpers import case_of, deliver_now
from tests.fake_stripe import API_KEY, Decline

pytestmark = pytest.mark.django_db(transaction=False)
DAY = timedelta(days=1)


def advance(**delta):
    return clock_service.advance(seconds=timedelta(**delta).total_seconds())


def set_clock(now):
    """Move the clock without running what became due (a stalled worker's view)."""
    TestClock.objects.filter(pk=TestClock.SINGLETON).update(now=now)


def pays(fake):
    return [r for r in fake.requests if r.method == "POST" and r.path.endswith("/pay")]


@pytest.fixture
def stripe_api(settings, fake_stripe):
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake_stripe.url
    return fake_stripe


def test_a_failure_whose_charge_event_is_late_is_looked_up_and_a_fraud_card_never_charged(
    stripe_sender, test_clock, stripe_api
):
    cus = StripeCustomer()
    stripe_api.register_failure(cus.invoice_id, decline_code="fraudulent")
    # Only the invoice's failure arrives, dated three days back.
    deliver_now(
        stripe_sender,
        cus,
        lambda c: (c.tick(-3 * 86400), c.invoice_event("invoice.payment_failed", attempt_count=1))[
            1
        ],
    )
    outbox.drain()

    attempt = PaymentAttempt.objects.get()
    assert (attempt.decline_code, attempt.card_brand) == ("fraudulent", "visa")
    assert case_of(cus).decline_class == "fraud"
    advance(days=20)
    assert pays(stripe_api) == []
    # The charge event arriving late merges into the same row.
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event(
            "charge.failed", attempt.stripe_charge_id, decline_code="fraudulent"
        ),
    )
    assert PaymentAttempt.objects.count() == 1
    assert pays(stripe_api) == []


def test_a_failure_nobody_can_explain_is_charged_only_after_the_bounded_wait(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    deliver_now(
        stripe_sender, cus, lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1)
    )
    advance(hours=20)
    assert [c for c in simulated_gateway.calls if c[0] == "pay_invoice"] == []
    assert OutboxItem.objects.filter(kind="failure_lookup").count() == 1

    advance(days=1)
    pay_times = [c for c in simulated_gateway.calls if c[0] == "pay_invoice"]
    assert len(pay_times) == 1


def test_a_retry_claimed_before_a_fraud_decline_does_not_charge_when_it_runs_late(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    set_clock(clock.now() + DAY)  # due, not run
    # a worker takes it, then stalls past its lease (a customer notice may be due too)
    [item_id] = OutboxItem.objects.filter(
        pk__in=outbox.claim_due(), kind=OutboxItem.Kind.PAYMENT_RETRY
    ).values_list("pk", flat=True)
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_2", decline_code="fraudulent"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=2),
    )
    set_clock(clock.now() + outbox_items.LEASE + timedelta(minutes=1))

    outbox.run_item(item_id=item_id)

    assert simulated_gateway.calls == []
    assert OutboxItem.objects.get(pk=item_id).status == "superseded"
    advance(days=21)
    assert simulated_gateway.calls == []
    assert case_of(cus).decline_class == "fraud"


@pytest.mark.parametrize(
    "previous",
    [None, {"billing_details": {"address": {"line1": "1 Old Street"}}}],
)
def test_an_update_that_leaves_the_card_unchanged_is_no_reason_to_charge(
    stripe_sender, test_clock, simulated_gateway, previous
):
    cus = StripeCustomer()
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="expired_card"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    advance(days=2)
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.payment_method_event("payment_method.updated", "pm_card_visa", previous),
    )
    advance(days=5)
    assert simulated_gateway.calls == []


def test_new_card_details_never_retry_a_card_the_network_said_never_to_try_again(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event(
            "charge.failed", "ch_1", decline_code="do_not_honor", network_decline_code="R1"
        ),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.payment_method_event(
            "payment_method.updated", "pm_card_visa", {"card": {"exp_year": 2026}}
        ),
    )
    advance(days=10)
    assert simulated_gateway.calls == []


def test_a_cancellation_stripe_does_not_know_is_recorded_once_and_never_looped(
    stripe_sender, test_clock, stripe_api
):
    cus = StripeCustomer()  # its subscription is unknown to this Stripe: 404 on cancel
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="expired_card"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    advance(days=70)

    cancels = [r for r in stripe_api.requests if r.method == "DELETE"]
    assert len(cancels) == 1
    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", "cancelled")
    assert OutboxItem.objects.filter(kind="cancel_subscription").count() == 1


@pytest.mark.parametrize("age_days", [20, 50, 400])
def test_an_old_invoice_seen_for_the_first_time_starts_at_notice_and_climbs(
    stripe_sender, test_clock, simulated_gateway, age_days
):
    cus = StripeCustomer()
    deliver_now(
        stripe_sender,
        cus,
        lambda c: (
            c.invoice_created.__setitem__(c.invoice_id, c.t - age_days * 86400),
            c.charge_event("charge.failed", "ch_1", decline_code="expired_card"),
        )[1],
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    case = case_of(cus)
    assert case.level == "notice"
    levels = []
    for _ in range(30):
        advance(days=1)
        case.refresh_from_db()
        if not levels or levels[-1] != case.level:
            levels.append(case.level)
    assert levels[:4] == ["notice", "premium_restricted", "read_only", "suspended"]
    assert DunningCase.objects.count() == 1


def upgrade_then_fail(sender, cus: StripeCustomer) -> None:
    from tests.test_engine_cases import upgrade

    deliver_now(sender, cus, upgrade)
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_up", decline_code="insufficient_funds"),
        lambda c: c.invoice_event(
            "invoice.payment_failed", attempt_count=1, billing_reason="subscription_update"
        ),
    )


def test_an_unpaid_upgrade_is_reverted_and_its_invoice_voided_at_stripe(
    stripe_sender, test_clock, stripe_api
):
    cus = StripeCustomer()
    stripe_api.add_subscription(cus.subscription, ["price_base", "price_addon"])
    stripe_api.script(cus.invoice_id, [Decline("insufficient_funds")] * 10)
    upgrade_then_fail(stripe_sender, cus)

    advance(days=40)

    assert stripe_api.items_of(cus.subscription) == {"price_base": 1}
    update = [r for r in stripe_api.requests if r.method == "POST" and "subscriptions/" in r.path]
    assert update and all(r.form.get("proration_behavior") == "none" for r in update)
    assert [r.path for r in stripe_api.requests if r.path.endswith("/void")] == [
        f"/v1/invoices/{cus.invoice_id}/void"
    ]
    case = case_of(cus)
    assert (case.state, case.resolution) == ("resolved", "upgrade_reverted")
    assert not [r for r in stripe_api.requests if r.method == "DELETE"]  # never cancelled


def test_a_revert_stripe_refuses_is_recorded_once_and_never_escalates(
    stripe_sender, test_clock, stripe_api
):
    cus = StripeCustomer()
    stripe_api.add_subscription(cus.subscription, ["price_base", "price_addon"])
    stripe_api.refuse_updates(cus.subscription, status=400, message="This update is not allowed.")
    stripe_api.script(cus.invoice_id, [Decline("insufficient_funds")] * 10)
    upgrade_then_fail(stripe_sender, cus)

    advance(days=60)

    updates = [r for r in stripe_api.requests if r.method == "POST" and "subscriptions/" in r.path]
    assert len(updates) == 1  # refused once, not asked again
    case = case_of(cus)
    assert case.level == "upgrade_reverted" and case.state != "escalated"
    assert OutboxItem.objects.get(kind="revert_upgrade").status == "dead"
    assert not [r for r in stripe_api.requests if r.method == "DELETE"]


def test_a_look_up_answered_by_the_late_charge_event_is_not_asked_again(
    stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    deliver_now(
        stripe_sender, cus, lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1)
    )
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="expired_card"),
    )
    advance(hours=2)

    lookup = OutboxItem.objects.get(kind="failure_lookup")
    assert lookup.status == "superseded"
    asked = [c for c in simulated_gateway.calls if c[0] == "latest_failure"]
    assert len(asked) <= 1  # at most the first ask, before the charge event came
