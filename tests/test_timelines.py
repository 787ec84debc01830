"""End-to-end timelines on the real worker path: deliveries in any order, duplicated and
late (the charge event hours or days after the invoice's failure), interleaved with
test-clock advances that run what became due (webhook processing, reviews, the outbox),
end in the same state as delivering every event on time and in order."""

import itertools
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_events.gateway import SIMULATED, FailureLookup, declined
from billing_events.models import Invoice
from billing_events.scenarios import StripeCustomer
from dunning import test_clock as clock_service
from dunning.models import BadDebtEpisode, CustomerNotice, DunningCase, TestClock
from entitlements.models import Restriction
from tests.events import deliver

pytestmark = pytest.mark.django_db
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY = 86400
# Every ladder has run its course by then (cancellation by day ~52 with dwell and delays).
END = START + timedelta(days=70)
CODES = {
    "soft": "insufficient_funds",
    "hard": "expired_card",
    "fraud": "fraudulent",
    "auth": "authentication_required",
}


@dataclass(frozen=True)
class Story:
    decline: str
    upgrade: bool  # a failed upgrade invoice a day later
    card_update_day: int | None
    uncollectible: str | None  # "base" or "upgrade": Stripe writes it off on day 6
    paid_day: int | None  # the customer pays the base invoice out of band


stories = st.builds(
    Story,
    st.sampled_from(sorted(CODES)),
    st.booleans(),
    st.sampled_from([None, 2, 5, 9]),
    st.sampled_from([None, None, "base", "upgrade"]),
    st.sampled_from([None, 3, 7, 12]),
)


def events(story: Story) -> list[dict]:
    """Every event of the story, with Stripe's own times."""
    cus = StripeCustomer(id="cus_TimelineCustomer", t=int(START.timestamp()))
    out = []

    def at(day: float, build):
        cus.t = int(START.timestamp() + day * DAY)
        out.append(build(cus))

    code = CODES[story.decline]
    at(0, lambda c: c.charge_event("charge.failed", "ch_base", decline_code=code))
    at(0, lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1, amount_due=4900))
    if story.upgrade:
        at(
            1,
            lambda c: c.charge_event(
                "charge.failed", "ch_up", invoice_id="in_up", decline_code=code
            ),
        )
        at(
            1,
            lambda c: c.invoice_event(
                "invoice.payment_failed",
                invoice_id="in_up",
                billing_reason="subscription_update",
                attempt_count=1,
                amount_due=1500,
            ),
        )
    if story.card_update_day is not None:
        at(story.card_update_day, lambda c: c.customer_updated("pm_new"))
    if story.uncollectible == "base":
        at(
            6,
            lambda c: c.invoice_event(
                "invoice.marked_uncollectible",
                status="uncollectible",
                attempt_count=1,
                amount_due=4900,
            ),
        )
    if story.uncollectible == "upgrade" and story.upgrade:
        at(
            6,
            lambda c: c.invoice_event(
                "invoice.marked_uncollectible",
                invoice_id="in_up",
                status="uncollectible",
                attempt_count=1,
                billing_reason="subscription_update",
                amount_due=1500,
            ),
        )
    if story.paid_day is not None and story.uncollectible != "base":
        at(
            story.paid_day,
            lambda c: c.invoice_event(
                "invoice.paid",
                status="paid",
                attempt_count=1,
                paid_out_of_band=True,
                amount_due=4900,
            ),
        )
    return out


def stripe_knows(story: Story) -> None:
    """Stripe's API answers a decline look-up with the real code (the webhook may be late)."""
    code = CODES[story.decline]
    SIMULATED.reset()
    SIMULATED.default = declined("insufficient_funds")
    for invoice_id, charge in (("in_TimelineCustomer", "ch_base"), ("in_up", "ch_up")):
        SIMULATED.script_failure(
            invoice_id,
            FailureLookup(
                found=True,
                outcome="failed",
                decline_code=code,
                charge_id=charge,
                payment_method="pm_card_visa",
                card_brand="visa",
                attempted_at=START,
            ),
        )


def play(sender, story: Story, deliveries: list[tuple[float, dict]]) -> dict:
    """Deliver each event at its moment (advancing the clock, running what is due on the
    way), run on to the end, and read the final state."""
    stripe_knows(story)
    with transaction.atomic():
        TestClock.objects.update_or_create(pk=TestClock.SINGLETON, defaults={"now": START})
        for moment, event in sorted(deliveries, key=lambda d: d[0]):
            clock_service.advance(to=START + timedelta(seconds=moment))
            deliver(sender, event)
        clock_service.advance(to=END)
        state = final_state()
        assert_notices_kept_their_rules()
        if story.decline == "fraud" and story.card_update_day is None:
            # However late the code arrived: a fraud-declined card is never charged.
            assert charges() == 0
        transaction.set_rollback(True)
    return state


def final_state() -> dict:
    cases = list(DunningCase.objects.order_by("pk").values_list("state", "resolution", "level"))
    return {
        "cases": cases[-1:],
        "in_bad_debt": BadDebtEpisode.objects.filter(exited_at__isnull=True).count(),
        # A payment Stripe made on time but delivered days late can find the account
        # suspended already (the engine could not know): such an episode, ended by that
        # payment, is the delivery's doing. Any other episode must match the on-time run.
        "ever_bad_debt": BadDebtEpisode.objects.exclude(exit_reason__in=PAYMENT_EXITS).exists(),
        "restrictions": sorted(Restriction.objects.values_list("code", "level")),
        "invoices": sorted(Invoice.objects.values_list("stripe_invoice_id", "status")),
    }


def assert_notices_kept_their_rules() -> None:
    """Whatever the order and timing of deliveries: never two messages within a day, no
    consequence announced after it took effect, nothing but good news after resolution."""
    claimed = list(
        CustomerNotice.objects.exclude(claimed_at=None)
        .order_by("claimed_at")
        .values_list("claimed_at", "kind", "context", "case_id")
    )
    for (before, *_), (after, *_) in itertools.pairwise(claimed):
        assert after - before >= timedelta(days=1), claimed
    resolved = dict(DunningCase.objects.exclude(resolved_at=None).values_list("pk", "resolved_at"))
    for at, kind, context, case_id in claimed:
        if kind in ("step_ahead", "final_notice"):
            assert at < datetime.fromisoformat(context["takes_effect_at"]), (kind, at, context)
        if kind in ("payment_failed", "step_ahead", "final_notice") and case_id in resolved:
            assert at <= resolved[case_id], (kind, at, resolved[case_id])


# How a bad-debt episode ends when a payment ends it (`recovered`: the base plan paid while
# an unpaid upgrade keeps the case open).
PAYMENT_EXITS = [
    BadDebtEpisode.Exit.PAID,
    BadDebtEpisode.Exit.PAID_OUT_OF_BAND,
    BadDebtEpisode.Exit.RECOVERED,
]


def charges() -> int:
    return sum(1 for call in SIMULATED.calls if call[0] == "pay_invoice")


# The on-time run of a story, computed once per story (it is deterministic).
REFERENCE: dict[Story, dict] = {}


@settings(
    max_examples=int(os.environ.get("TIMELINE_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(story=stories, data=st.data())
def test_any_delivery_order_and_timing_ends_where_on_time_delivery_ends(
    stripe_sender, settings, story, data
):
    settings.DUNNING_TEST_CLOCK = True
    history = events(story)
    on_time = [(e["created"] - START.timestamp(), e) for e in history]
    if story not in REFERENCE:
        REFERENCE[story] = play(stripe_sender, story, on_time)
    reference = REFERENCE[story]

    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    shuffled = []
    for created, event in on_time:
        # Late by up to three days (a charge event hours after its invoice's failure,
        # an endpoint down for a while); sometimes delivered twice.
        shuffled.append((created + rng.choice([0, 0, 60, 3600, 6 * 3600, 3 * DAY]), event))
        if rng.random() < 0.2:
            shuffled.append((created + rng.uniform(0, 2 * DAY), event))
    rng.shuffle(shuffled)

    assert play(stripe_sender, story, shuffled) == reference, story
