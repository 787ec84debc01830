"""Customer notices end to end: signed Stripe events in, the test clock walking the days,
the outbox sending through Django's SMTP backend to a real SMTP server on loopback."""

from datetime import timedelta

import pytest

from billing_events.models import Account
from dunning import rollout, support
from dunning import test_clock as clock_service
from dunning.engine import handle
from dunning.models import CustomerNotice, DunningCase, OutboxItem, OutcomeEvent
from dunning.triggers import Trigger, TriggerKind
from tests.events import Customer, deliver

pytestmark = pytest.mark.django_db
DAY = 86400
HOSTED = "https://invoice.stripe.com/i/acct_1/test_notice"


def fail(sender, cus: Customer, code: str = "insufficient_funds", **invoice) -> None:
    deliver(
        sender,
        cus.charge_event("charge.failed", f"ch_{cus.t}", decline_code=code),
        cus.invoice_event(
            "invoice.payment_failed",
            attempt_count=1,
            amount_due=4900,
            hosted_invoice_url=HOSTED,
            **invoice,
        ),
    )


def customer(sender, start, name: str, locales: list[str] | None = None) -> Customer:
    cus = Customer(id=f"cus_{name}", t=int(start.timestamp()))
    deliver(sender, cus.customer_created(preferred_locales=locales or ["en-US"]))
    return cus


def walk(start, days: float) -> None:
    clock_service.advance(to=start + timedelta(seconds=days * DAY))


def sent_days(start) -> list[tuple[int, str]]:
    rows = CustomerNotice.objects.filter(status=CustomerNotice.Status.SENT).order_by("sent_at")
    return [((row.sent_at - start).days, row.key.split(":")[0]) for row in rows]


def test_a_failing_account_hears_of_each_step_before_it_and_nothing_twice(
    stripe_sender, test_clock, smtp
):
    cus = customer(stripe_sender, test_clock, "NoticeWalk")
    fail(stripe_sender, cus)
    walk(test_clock, 60)

    # Failure at once; each step three days ahead (premium day 7, read-only 14, suspension
    # 30), the cancellation (day 45) a week ahead; then nothing after the case closed.
    assert sent_days(test_clock) == [
        (0, "payment_failed"),
        (4, "step_ahead"),
        (11, "step_ahead"),
        (27, "step_ahead"),
        (38, "final_notice"),
    ]
    keys = smtp.inbox.keys()
    assert sorted(keys) == sorted(CustomerNotice.objects.values_list("key", flat=True))
    assert len(keys) == len(set(keys))  # none twice
    first = smtp.inbox.messages[0]
    assert first["To"] == "cus_NoticeWalk@example.com"
    assert first.get_body(("html",)) is not None and first.get_body(("plain",)) is not None
    failed = CustomerNotice.objects.get(kind="payment_failed")
    assert failed.context["action"] == "pay_invoice"
    assert failed.context["action_url"] == HOSTED
    assert failed.context["next_retry_at"]  # a soft decline says when we try again
    assert HOSTED in first.get_body(("plain",)).get_content()

    # Recomputing again and again plans nothing new and sends nothing more.
    account = Account.objects.get()
    for _ in range(3):
        handle(Trigger(TriggerKind.TIME_PASSED, account.pk, source="test"))
    walk(test_clock, 70)
    assert len(smtp.inbox.messages) == len(keys)


def test_payment_recovered_is_the_last_message(stripe_sender, test_clock, smtp):
    cus = customer(stripe_sender, test_clock, "NoticeRecovered")
    fail(stripe_sender, cus)
    walk(test_clock, 5)
    cus.t = int(test_clock.timestamp()) + 5 * DAY
    deliver(
        stripe_sender,
        cus.invoice_event("invoice.paid", status="paid", attempt_count=3, amount_due=4900),
    )
    walk(test_clock, 60)
    assert sent_days(test_clock) == [(0, "payment_failed"), (4, "step_ahead"), (5, "recovered")]
    # The step warnings still waiting were withdrawn by the payment, never sent.
    assert not CustomerNotice.objects.filter(status=CustomerNotice.Status.SCHEDULED).exists()


def test_no_message_while_paused_and_the_held_step_is_announced_after(
    stripe_sender, test_clock, smtp
):
    cus = customer(stripe_sender, test_clock, "NoticePaused")
    fail(stripe_sender, cus)
    walk(test_clock, 1)
    account = Account.objects.get()
    until = test_clock + timedelta(days=20)
    support.pause_dunning(account_id=account.pk, until=until, reason="promised", actor="agent")
    walk(test_clock, 24)
    claimed = CustomerNotice.objects.exclude(claimed_at=None).values_list("claimed_at", flat=True)
    assert all(not (test_clock + timedelta(days=1) <= at < until) for at in claimed)
    # The premium step the pause held back: announced when the pause ends, taken 3 days on.
    step = CustomerNotice.objects.get(key__endswith=":premium_restricted")
    assert step.status == "sent" and step.sent_at == until
    assert step.context["takes_effect_at"] == (until + timedelta(days=3)).isoformat()
    case = DunningCase.objects.get()
    assert (case.level, case.level_since) == ("premium_restricted", until + timedelta(days=3))
    assert sent_days(test_clock)[0] == (0, "payment_failed")


def test_shadow_mode_sends_nothing_and_records_what_would_have_gone(
    stripe_sender, test_clock, smtp
):
    rollout.set_gate(stage="off", kill_switch=False, allowlist=[], actor="test", reason="shadow")
    cus = customer(stripe_sender, test_clock, "NoticeShadow")
    fail(stripe_sender, cus)
    walk(test_clock, 60)
    assert smtp.inbox.messages == []
    would = set(CustomerNotice.objects.values_list("status", "kind"))
    assert ("shadow", "payment_failed") in would and ("shadow", "step_ahead") in would
    assert {status for status, _ in would} == {"shadow"}
    assert not OutboxItem.objects.filter(kind=OutboxItem.Kind.CUSTOMER_NOTICE).exists()


def test_a_mail_server_down_for_hours_loses_nothing_and_sends_nothing_twice(
    stripe_sender, test_clock, smtp
):
    smtp.stop()
    cus = customer(stripe_sender, test_clock, "NoticeOutage")
    fail(stripe_sender, cus)
    walk(test_clock, 0.25)  # six hours of the relay refusing connections
    notice = CustomerNotice.objects.get(kind="payment_failed")
    assert notice.status == CustomerNotice.Status.SENDING
    item = OutboxItem.objects.get(kind=OutboxItem.Kind.CUSTOMER_NOTICE, payload__notice=notice.pk)
    assert item.status == OutboxItem.Status.PENDING and item.attempts >= 3
    assert item.last_error

    smtp.start()
    walk(test_clock, 2)
    assert smtp.inbox.keys() == [notice.key]
    notice.refresh_from_db()
    assert notice.status == CustomerNotice.Status.SENT
    assert (notice.sent_at - notice.claimed_at) >= timedelta(hours=6)


def test_an_address_the_server_refuses_fails_for_good(stripe_sender, test_clock, smtp):
    smtp.inbox.refuse.add("cus_NoticeBounce@example.com")
    cus = customer(stripe_sender, test_clock, "NoticeBounce")
    fail(stripe_sender, cus)
    walk(test_clock, 1)
    notice = CustomerNotice.objects.get(kind="payment_failed")
    assert notice.status == CustomerNotice.Status.FAILED
    assert "refused" in notice.reason
    item = OutboxItem.objects.get(kind=OutboxItem.Kind.CUSTOMER_NOTICE, payload__notice=notice.pk)
    assert item.status == OutboxItem.Status.DEAD and item.attempts == 1


def test_authentication_required_sends_the_customer_to_the_invoice_page(
    stripe_sender, test_clock, smtp
):
    cus = customer(stripe_sender, test_clock, "NoticeAuth")
    fail(stripe_sender, cus, code="authentication_required")
    walk(test_clock, 0.1)
    notice = CustomerNotice.objects.get(kind="payment_failed")
    assert notice.context["decline_class"] == "auth_required"
    assert (notice.context["action"], notice.context["action_url"]) == ("authenticate", HOSTED)
    assert smtp.inbox.keys() == [notice.key]


def test_an_expired_card_asks_for_a_new_card(stripe_sender, test_clock, smtp, settings):
    settings.DUNNING_UPDATE_PAYMENT_METHOD_URL = (
        "https://app.example.com/billing/{stripe_customer_id}"
    )
    cus = customer(stripe_sender, test_clock, "NoticeExpired")
    fail(stripe_sender, cus, code="expired_card")
    walk(test_clock, 0.1)
    notice = CustomerNotice.objects.get(kind="payment_failed")
    assert notice.context["decline_class"] == "hard"
    assert notice.context["action"] == "update_payment_method"
    assert notice.context["action_url"] == "https://app.example.com/billing/cus_NoticeExpired"
    assert notice.context["next_retry_at"] is None  # the same card is not tried again


def test_a_failed_upgrade_speaks_of_the_upgrade_only(stripe_sender, test_clock, smtp):
    cus = customer(stripe_sender, test_clock, "NoticeUpgrade")
    fail(stripe_sender, cus, billing_reason="subscription_update")
    walk(test_clock, 45)
    notices = CustomerNotice.objects.exclude(status=CustomerNotice.Status.WITHDRAWN)
    assert {n.kind for n in notices} <= {"payment_failed", "step_ahead"}
    assert all(n.facts["upgrade"] for n in notices)
    levels = {n.facts["level"] for n in notices if n.kind == "step_ahead"}
    assert levels == {"upgrade_restricted", "upgrade_reverted"}
    # Two were due on day 0 (the failure, the upgrade's features pausing on day 3): one
    # a day, the more important first.
    assert sent_days(test_clock)[:2] == [(0, "step_ahead"), (1, "payment_failed")]


def test_an_expiring_card_is_announced_two_weeks_and_three_days_ahead(
    stripe_sender, test_clock, smtp
):
    cus = customer(stripe_sender, test_clock, "NoticeCard")
    deliver(stripe_sender, cus.source_expiring(exp_month=12, exp_year=2026))
    walk(test_clock, 62)  # to 2027-01-03
    rows = CustomerNotice.objects.filter(kind="card_expiring").order_by("due_at")
    assert [(r.status, r.sent_at.date().isoformat()) for r in rows] == [
        ("sent", "2026-12-18"),
        ("sent", "2026-12-29"),
    ]
    assert [r.context["days_left"] for r in rows] == [14, 3]


def test_a_new_card_withdraws_the_expiry_reminder(stripe_sender, test_clock, smtp):
    cus = customer(stripe_sender, test_clock, "NoticeNewCard")
    deliver(stripe_sender, cus.source_expiring(exp_month=12, exp_year=2026))
    walk(test_clock, 47)  # the 14-day reminder went on 18 December
    cus.t = int(test_clock.timestamp()) + 47 * DAY
    deliver(stripe_sender, cus.customer_updated(default_payment_method="pm_new_card"))
    walk(test_clock, 62)
    rows = dict(CustomerNotice.objects.values_list("key", "status"))
    assert rows == {
        "card_expiring:2027-01-01:14": "sent",
        "card_expiring:2027-01-01:3": "withdrawn",
    }
    assert len(smtp.inbox.messages) == 1


def test_the_customers_language_is_the_first_one_shipped(stripe_sender, test_clock, smtp):
    cus = customer(stripe_sender, test_clock, "NoticeFrench", locales=["fr-FR", "en"])
    fail(stripe_sender, cus)
    walk(test_clock, 0.1)
    assert CustomerNotice.objects.get(kind="payment_failed").language == "fr"


def test_the_company_messaging_service_can_send_instead(stripe_sender, test_clock, smtp, settings):
    settings.DUNNING_NOTICE_CHANNEL = "outcome_event"
    cus = customer(stripe_sender, test_clock, "NoticeEvents")
    fail(stripe_sender, cus)
    walk(test_clock, 5)
    assert smtp.inbox.messages == []
    events = OutcomeEvent.objects.filter(type="customer_notice.due").order_by("sequence")
    assert [e.payload["kind"] for e in events] == ["payment_failed", "step_ahead"]
    first = events[0].payload
    assert first["recipient"] == "cus_NoticeEvents@example.com"
    assert first["context"]["action_url"] == HOSTED and first["subject"]
    assert set(CustomerNotice.objects.values_list("status", flat=True)) == {"sent"}


def test_a_message_waits_a_while_for_the_customers_address(stripe_sender, test_clock, smtp):
    cus = Customer(id="cus_NoticeLateAddress", t=int(test_clock.timestamp()))
    fail(stripe_sender, cus)  # the invoice's events before customer.created
    walk(test_clock, 0.02)  # half an hour
    notice = CustomerNotice.objects.get(kind="payment_failed")
    assert notice.status == CustomerNotice.Status.SCHEDULED and smtp.inbox.messages == []
    deliver(stripe_sender, cus.customer_created())
    walk(test_clock, 0.5)
    assert smtp.inbox.keys() == [notice.key]


def test_a_customer_without_any_address_is_skipped_after_an_hour(stripe_sender, test_clock, smtp):
    cus = Customer(id="cus_NoticeNoAddress", t=int(test_clock.timestamp()))
    fail(stripe_sender, cus)
    walk(test_clock, 2)
    notice = CustomerNotice.objects.get(kind="payment_failed")
    assert (notice.status, notice.reason) == ("skipped", "the customer has no email address")


def test_a_message_claimed_today_holds_the_next_even_one_due_long_ago(
    stripe_sender, test_clock, smtp
):
    # The claim reads the day's messages from the snapshot: one due 70 days ago (beyond
    # the snapshot's 60 days of notices) but only sent two hours ago still counts.
    cus = customer(stripe_sender, test_clock, "NoticeLongDue")
    account = Account.objects.get()
    sent = test_clock - timedelta(hours=2)
    CustomerNotice.objects.create(
        account=account,
        key="card_expiring:2026-10-01:3",
        kind=CustomerNotice.Kind.CARD_EXPIRING,
        status=CustomerNotice.Status.SENT,
        due_at=test_clock - timedelta(days=70),
        claimed_at=sent,
        sent_at=sent,
        created_at=test_clock - timedelta(days=71),
    )
    fail(stripe_sender, cus)
    walk(test_clock, 0.5)
    assert sent_days(test_clock) == [(-1, "card_expiring")]
    walk(test_clock, 1)
    assert sent_days(test_clock) == [(-1, "card_expiring"), (0, "payment_failed")]
    failed = CustomerNotice.objects.get(kind="payment_failed")
    assert failed.sent_at >= sent + timedelta(days=1)
