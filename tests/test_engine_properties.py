"""The engine's invariants, by hypothesis: idempotent, order-independent, convergent."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_events.gateway import SIMULATED
from billing_events.models import Account, Invoice, WebhookEvent
from billing_events.scenarios import StripeCustomer
from dunning import outbox
from dunning.engine import handle
from dunning.intake.processing import apply_event
from dunning.models import AccountStanding, DunningCase
from dunning.triggers import Trigger, TriggerKind
from entitlements.models import Restriction

pytestmark = pytest.mark.django_db

DAY = 86400
START = 1_761_991_200  # 2025-11-01 10:00 UTC on Stripe's clock
NOW = "2025-11-21 10:00:00"  # the project clock: 20 days later


def soft_then_paid(c: StripeCustomer) -> None:
    c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds")
    c.invoice_event("invoice.payment_failed", attempt_count=1)
    c.tick(3 * DAY)
    c.charge_event("charge.failed", "ch_2", decline_code="insufficient_funds")
    c.invoice_event("invoice.payment_failed", attempt_count=2)
    c.tick(4 * DAY)
    c.charge_event("charge.succeeded", "ch_3", status="succeeded")
    c.invoice_event("invoice.paid", status="paid", attempt_count=3)


def hard_then_new_card(c: StripeCustomer) -> None:
    c.charge_event("charge.failed", "ch_1", decline_code="expired_card")
    c.invoice_event("invoice.payment_failed", attempt_count=1)
    c.subscription_event("customer.subscription.updated", status="past_due")
    c.tick(2 * DAY)
    c.customer_updated("pm_new")


def written_off_and_cancelled(c: StripeCustomer) -> None:
    c.charge_event("charge.failed", "ch_1", decline_code="do_not_honor")
    c.invoice_event("invoice.payment_failed", attempt_count=1)
    c.tick(DAY)
    c.invoice_event("invoice.marked_uncollectible", status="uncollectible", attempt_count=1)
    c.tick(DAY)
    c.subscription_event("customer.subscription.deleted", status="canceled")


def failed_upgrade(c: StripeCustomer) -> None:
    c.invoice_event("invoice.paid", invoice_id="in_base", status="paid", attempt_count=1)
    c.charge_event("charge.failed", "ch_up", invoice_id="in_up", decline_code="generic_decline")
    c.invoice_event(
        "invoice.payment_failed",
        invoice_id="in_up",
        billing_reason="subscription_update",
        attempt_count=1,
    )


def failed_then_voided(c: StripeCustomer) -> None:
    c.charge_event("charge.failed", "ch_1", decline_code="processing_error")
    c.invoice_event("invoice.payment_failed", attempt_count=1)
    c.tick(DAY)
    c.invoice_event("invoice.voided", status="void", attempt_count=1)


def paid_out_of_band(c: StripeCustomer) -> None:
    c.invoice_event("invoice.payment_failed", attempt_count=1)
    c.tick(2 * DAY)
    c.invoice_event("invoice.paid", status="paid", attempt_count=1, paid_out_of_band=True)


def still_unpaid(c: StripeCustomer) -> None:
    c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds")
    c.invoice_event("invoice.payment_failed", attempt_count=1)
    c.tick(DAY)
    c.payment_intent_failed("pi_2", "ch_2", decline_code="insufficient_funds")
    c.invoice_event("invoice.payment_failed", attempt_count=2)


STORIES = [
    soft_then_paid,
    hard_then_new_card,
    written_off_and_cancelled,
    failed_upgrade,
    failed_then_voided,
    paid_out_of_band,
    still_unpaid,
]


def history(story) -> list[dict]:
    customer = StripeCustomer(t=START)
    customer.subscription_event("customer.subscription.created")
    customer.invoice_event("invoice.finalized")
    story(customer)
    return customer.events


def deliver(event: dict) -> None:
    with transaction.atomic():
        apply_event(WebhookEvent(stripe_event_id=event["id"], payload=event))


def stores() -> dict:
    account = Account.objects.get()
    standing = AccountStanding.objects.filter(account=account).first()
    return {
        "cases": [
            (
                c.state,
                c.resolution,
                c.level,
                c.decline_class,
                c.earliest_unpaid_at,
                c.amount_overdue,
                c.next_review_at,
                sorted(c.invoices.values_list("invoice__stripe_invoice_id", flat=True)),
            )
            for c in DunningCase.objects.order_by("pk")
        ],
        "restrictions": sorted(Restriction.objects.values_list("code", "level")),
        "standing": (standing.requested, standing.acknowledged) if standing else ("good", "good"),
        "invoices": sorted(
            Invoice.objects.values_list("stripe_invoice_id", "status", "attempt_count")
        ),
    }


def run(events: list[dict]) -> dict:
    """Deliver, drain the outbox, and read the stores, leaving the database untouched."""
    SIMULATED.reset()
    with transaction.atomic(), freeze_time(NOW):
        for event in events:
            deliver(event)
        outbox.drain()
        result = stores()
        transaction.set_rollback(True)
    return result


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), story=st.sampled_from(STORIES))
def test_any_order_with_duplicates_ends_in_the_same_stores(data, story):
    events = history(story)
    order = data.draw(st.permutations(events))
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=5))

    assert run(list(order) + duplicates) == run(events)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), story=st.sampled_from(STORIES))
def test_after_the_last_event_and_the_outbox_a_recompute_is_empty_and_writes_nothing(data, story):
    order = data.draw(st.permutations(history(story)))
    SIMULATED.reset()
    with transaction.atomic(), freeze_time(NOW):
        for event in order:
            deliver(event)
        outbox.drain()
        account_id = Account.objects.get().pk
        with CaptureQueriesContext(connection) as queries:
            first = handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id, "support:test"))
            second = handle(Trigger(TriggerKind.DRIFT_DETECTED, account_id, "beat:drift"))
        transaction.set_rollback(True)

    assert first.changes == () and second.changes == ()
    assert not [q for q in queries if q["sql"].split()[0] in {"INSERT", "UPDATE", "DELETE"}]


def test_stories_end_where_a_payments_engineer_expects():
    expected = {
        soft_then_paid: ("resolved", "paid", "none"),
        # Everything arrives 20 days late: a first decision is at most notice.
        hard_then_new_card: ("retrying", "", "notice"),
        written_off_and_cancelled: ("resolved", "written_off", "cancelled"),
        failed_upgrade: ("retrying", "", "notice"),
        failed_then_voided: ("resolved", "voided", "none"),
        paid_out_of_band: ("resolved", "paid_out_of_band", "none"),
        still_unpaid: ("retrying", "", "notice"),
    }
    for story, (state, resolution, level) in expected.items():
        cases = run(history(story))["cases"]
        assert [case[:3] for case in cases] == [(state, resolution, level)], story.__name__
