"""Graduated consequences: the ladder, upgrades, exhaustion, bad debt, Account Management."""

import pytest

from billing_events.models import Subscription
from billing_events.scenarios import StripeCustomer
from billing_events.signature import verify
from core import clock
from dunning import outbox
from dunning import test_clock as clock_service
from dunning.models import AccountStanding, BadDebtEpisode, DunningCase, OutboxItem, OutcomeEvent
from entitlements.models import Restriction
from tests.dunning_helpers import account_of, case_of, deliver_now
from tests.http_peer import Peer, free_port

pytestmark = pytest.mark.django_db
DAY = 86400


def advance(days: float):
    return clock_service.advance(seconds=days * DAY)


def renewal_fails(sender, cus, code="insufficient_funds", paid_months=0, amount=2000, **fields):
    builders = [
        (
            lambda c, m=m: c.invoice_event(
                "invoice.paid", invoice_id=f"in_{c.id}_m{m}", status="paid"
            )
        )
        for m in range(paid_months)
    ]
    builders += [
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}", decline_code=code, amount=amount),
        lambda c: c.invoice_event(
            "invoice.payment_failed", attempt_count=1, amount_due=amount, **fields
        ),
    ]
    deliver_now(sender, cus, *builders)


def test_failed_upgrade_invoices_never_put_anyone_in_bad_debt(stripe_sender, test_clock):
    customers = [
        StripeCustomer(id=f"cus_up{n:03d}", subscription=f"sub_up{n:03d}") for n in range(40)
    ]
    for n, cus in enumerate(customers):
        code = ["insufficient_funds", "expired_card", "fraudulent", "do_not_honor"][n % 4]
        renewal_fails(stripe_sender, cus, code, paid_months=1, billing_reason="subscription_update")

    advance(120)

    assert BadDebtEpisode.objects.count() == 0
    assert not DunningCase.objects.filter(state="escalated").exists()
    assert set(Restriction.objects.values_list("code", flat=True)) == {"upgraded_features"}
    assert Subscription.objects.filter(status="canceled").count() == 0


def test_every_exhausted_account_is_cancelled_through_the_lifecycle(
    stripe_sender, test_clock, simulated_gateway
):
    customers = [
        StripeCustomer(id=f"cus_ex{n:03d}", subscription=f"sub_ex{n:03d}") for n in range(12)
    ]
    for n, cus in enumerate(customers):
        cus.subscription_event("customer.subscription.created")
        renewal_fails(
            stripe_sender, cus, ["insufficient_funds", "expired_card", "processing_error"][n % 3]
        )
    deliver_now(stripe_sender, customers[0])  # nothing new: the clock only

    advance(60)

    cases = DunningCase.objects.all()
    assert [(c.state, c.resolution) for c in cases] == [("resolved", "cancelled")] * 12
    cancelled = {call[1] for call in simulated_gateway.calls if call[0] == "cancel_subscription"}
    assert cancelled == {cus.subscription for cus in customers}
    assert AccountStanding.objects.filter(acknowledged="cancelled").count() == 12
    assert BadDebtEpisode.objects.filter(exit_reason="cancelled").count() == 12


def test_a_long_paying_customer_gets_more_time_than_a_new_one(stripe_sender, test_clock):
    loyal = StripeCustomer(id="cus_loyal", subscription="sub_loyal")
    newer = StripeCustomer(id="cus_newer", subscription="sub_newer")
    renewal_fails(stripe_sender, loyal, paid_months=12)
    renewal_fails(stripe_sender, newer, paid_months=2)

    advance(10)

    assert case_of(newer).level == "premium_restricted"
    assert case_of(loyal).level == "notice"
    assert (
        "12 invoices paid and no dunning in 365 days: ladder x2"
        in case_of(loyal).last_decision.summary
    )


def test_a_small_amount_never_costs_more_than_premium_features_before_the_end(
    stripe_sender, test_clock
):
    cus = StripeCustomer()
    renewal_fails(stripe_sender, cus, amount=300)

    advance(40)
    assert (case_of(cus).level, case_of(cus).state) == (
        "premium_restricted",
        "awaiting_customer_action",
    )

    advance(10)
    assert case_of(cus).resolution == "cancelled"


def test_marked_uncollectible_opens_a_bad_debt_episode_that_exits_as_paid(
    support_reader, stripe_sender, test_clock
):
    cus = StripeCustomer()
    renewal_fails(stripe_sender, cus, "do_not_honor", amount=4900)
    advance(3)
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.marked_uncollectible", status="uncollectible", attempt_count=2, amount_due=4900
        ),
    )
    episode = BadDebtEpisode.objects.get()
    assert (episode.reason, episode.amount, episode.products) == (
        "marked_uncollectible",
        {"usd": 4900},
        [cus.subscription],
    )
    assert episode.exited_at is None

    advance(5)
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event("invoice.paid", status="paid", attempt_count=3, amount_due=4900),
    )

    episode.refresh_from_db()
    assert (episode.exit_reason, (episode.exited_at - episode.entered_at).days) == ("paid", 5)
    metrics = support_reader.get("/api/v1/bad-debt/metrics/?days=30").json()
    assert metrics["in_bad_debt_now"] == 0
    assert metrics["median_days_in_bad_debt"] == 5.0
    assert metrics["entries_per_day"][0]["by_reason"] == {"marked_uncollectible": 1}
    assert metrics["exits_per_day"][0]["by_reason"] == {"paid": 1}


def test_bad_debt_metrics_reject_a_bad_window(support_reader, test_clock):
    assert support_reader.get("/api/v1/bad-debt/metrics/?days=0").status_code == 400


def test_entitlements_endpoint_lists_features_and_restrictions_with_reasons(
    api_client, stripe_sender, test_clock
):
    from django.contrib.auth.models import Group, User

    cus = StripeCustomer()
    renewal_fails(stripe_sender, cus)
    advance(15)
    url = f"/api/v1/accounts/{account_of(cus).pk}/entitlements/"
    assert api_client.get(url).status_code == 403  # no support role yet

    User.objects.get(username="support").groups.add(
        Group.objects.get_or_create(name="support_read")[0]
    )
    body = api_client.get(url).json()

    assert body["features"] == ["upgraded_features", "core_access"]
    assert {r["code"]: r["level"] for r in body["restrictions"]} == {
        "premium_features": "read_only",
        "write_access": "read_only",
    }
    assert all("days old" in r["reason"] for r in body["restrictions"])
    assert api_client.get("/api/v1/accounts/999999/entitlements/").status_code == 404


def test_lifting_is_complete_and_prompt_when_the_money_comes_in(stripe_sender, test_clock):
    cus = StripeCustomer()
    renewal_fails(stripe_sender, cus)
    advance(20)
    assert Restriction.objects.count() == 2

    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event("invoice.paid", status="paid", attempt_count=5),
    )

    assert Restriction.objects.count() == 0
    assert case_of(cus).state == "resolved"


def test_outcome_events_reach_subscribers_signed_and_in_order(
    stripe_sender, test_clock, settings, http_peer
):
    settings.DUNNING_OUTCOME_WEBHOOK_URLS = [http_peer.url]
    settings.DUNNING_OUTCOME_WEBHOOK_SECRET = "whsec_outcomes"
    http_peer.fail_next = 2  # the first deliveries fail: later events must wait their turn
    cus = StripeCustomer()
    renewal_fails(stripe_sender, cus)

    advance(16)
    advance(1)

    events = list(OutcomeEvent.objects.order_by("sequence").values_list("sequence", "type"))
    assert [n for n, _ in events] == list(range(1, len(events) + 1))
    assert events[0][1] == "dunning.opened"
    delivered = [r.json() for r in http_peer.received]
    assert [d["sequence"] for d in delivered] == [n for n, _ in events]
    assert [d["data"]["level"] for d in delivered][:3] == [
        "notice",
        "premium_restricted",
        "read_only",
    ]
    request = http_peer.received[0]
    verify(
        payload=request.body,
        header=request.headers["Dunning-Signature"],
        secrets=["whsec_outcomes"],
        tolerance_seconds=10**9,
        now_unix=clock.now().timestamp(),
    )


def test_account_management_down_then_slow_never_delays_consequences(
    stripe_sender, test_clock, settings
):
    settings.ACCOUNT_MANAGEMENT_URL = f"http://127.0.0.1:{free_port()}"  # down: nothing listens
    settings.ACCOUNT_MANAGEMENT_TIMEOUT_SECONDS = 0.3
    cus = StripeCustomer()
    renewal_fails(stripe_sender, cus)

    advance(8)  # premium restricted on day 7, while Account Management is unreachable
    assert case_of(cus).level == "premium_restricted"
    assert set(Restriction.objects.values_list("code", flat=True)) == {"premium_features"}
    standing = AccountStanding.objects.get()
    assert (standing.requested, standing.acknowledged) == ("past_due", "")
    pending = OutboxItem.objects.get(kind="account_standing", status="pending")
    assert pending.attempts >= 1 and pending.last_error

    advance(5.5)  # still down on day 13.5
    slow = Peer(delay_seconds=0.6).start()  # up, but slower than the client timeout
    settings.ACCOUNT_MANAGEMENT_URL = slow.url
    settings.ACCOUNT_MANAGEMENT_TIMEOUT_SECONDS = 0.2
    advance(1)  # read-only on day 14, on time
    assert case_of(cus).level == "read_only"
    assert AccountStanding.objects.get().acknowledged == ""
    slow.stop()

    healthy = Peer().start()
    settings.ACCOUNT_MANAGEMENT_URL = healthy.url
    advance(1)  # the backoff comes round and the standing converges
    healthy.stop()

    standing = AccountStanding.objects.get()
    assert (standing.requested, standing.acknowledged) == ("restricted", "restricted")
    assert healthy.received[-1].json() == {"standing": "restricted"}
    assert healthy.received[-1].path == f"/accounts/{cus.id}/standing"
    assert outbox.drain() == 0
