"""The pure decision core on plain values: no database, no clock, one row per rule."""

from dataclasses import replace
from datetime import timedelta

import pytest

from dunning.compute import compute
from dunning.diff import diff
from dunning.policy import Level
from tests.core_values import POLICY, T0, case, days, decline, in_case, invoice, snapshot

UPGRADE = "subscription_update"


def decide(snap, now):
    return compute(snap, now, POLICY)


# --- defect 1: a failed upgrade never ends in bad debt --------------------------------------


@pytest.mark.parametrize("status", ["open", "uncollectible"])
@pytest.mark.parametrize("age", [0, 5, 20, 40, 90])
def test_an_unpaid_upgrade_never_opens_bad_debt_takes_core_access_or_cancels(status, age):
    upgrade = invoice(2, status=status, reason=UPGRADE, amount=1500)
    snap = snapshot([upgrade], [decline(2)])
    # Whatever level the case already reached, climbing on from it.
    for level in ("notice", "upgrade_restricted"):
        snap_in_case = in_case(snap, case(level, since=T0))
        desired = decide(snap_in_case, T0 + days(age))
        assert desired.case.bad_debt is None
        assert "core_access" not in desired.restrictions
        assert not desired.case.cancel_subscriptions
        assert desired.case.state != "escalated"
        assert desired.standing == "good"


def test_an_uncollectible_base_invoice_is_bad_debt_but_climbs_one_rung_at_a_time():
    written_off = invoice(1, status="uncollectible")
    desired = decide(snapshot([written_off], [decline(1)]), T0 + days(2))
    assert desired.case.bad_debt == "marked_uncollectible"
    assert desired.case.level == Level.NOTICE  # a first decision is at most notice
    assert desired.case.state == "escalated"


# --- defect 2: no charge while the decline code is unknown ----------------------------------


@pytest.mark.parametrize("failed_days_ago", [0, 3, 30])
def test_a_failure_without_its_charge_event_asks_stripe_and_plans_no_charge(failed_days_ago):
    """However far back Stripe dated the failure: the wait runs from asking, not from it."""
    at = T0 - days(failed_days_ago)
    failed = invoice(1, attempts=1, opened=at, failed_at=at)
    desired = decide(snapshot([failed], []), T0)
    assert desired.case.retry is None
    assert desired.case.lookups == {"in_1:1"}
    assert "unknown" in desired.summary()


@pytest.mark.parametrize(
    ("asked_hours_ago", "ended", "charges"),
    [
        (2, False, False),  # Stripe not answered yet, the event not here: wait
        (23, False, False),
        (25, False, True),  # the bounded wait is over
        (2, True, True),  # Stripe answered and had nothing either
    ],
)
def test_an_unknown_failure_is_planned_only_once_asked_and_answered_or_waited_out(
    asked_hours_ago, ended, charges
):
    failed = invoice(1, attempts=1, opened=T0 - days(3), failed_at=T0 - days(3))
    now = T0 + days(1)
    snap = snapshot(
        [failed],
        [],
        lookups_asked={"in_1:1": now - timedelta(hours=asked_hours_ago)},
        lookups_ended=frozenset({"in_1:1"}) if ended else frozenset(),
    )
    desired = decide(snap, now)
    assert (desired.case.retry is not None) == charges
    assert desired.case.lookups == ({"in_1:1"} if not charges else frozenset())
    if charges:
        assert "never received" in desired.summary()


def test_a_second_failure_whose_code_has_not_arrived_blocks_the_next_charge():
    failed = invoice(1, attempts=2, failed_at=T0)
    desired = decide(snapshot([failed], [decline(1)]), T0 + days(1.2))
    assert desired.case.retry is None
    assert desired.case.lookups == {"in_1:2"}


# --- defect 3 and the sticky class: a later soft decline never hides a fraud one --------------


@pytest.mark.parametrize("code", ["fraudulent", "stolen_card", "expired_card", "lost_card"])
def test_a_soft_decline_after_a_fraud_or_hard_one_on_the_same_card_does_not_reopen_retries(code):
    failed = invoice(1, attempts=2)
    attempts = [decline(1, code, at=T0), decline(1, "insufficient_funds", at=T0 + days(1))]
    desired = decide(snapshot([failed], attempts), T0 + days(2))
    assert desired.case.retry is None
    assert desired.case.decline_class in ("fraud", "hard")


def test_a_new_card_after_a_hard_decline_is_retried_at_once():
    failed = invoice(1, attempts=1)
    snap = snapshot(
        [failed],
        [decline(1, "expired_card")],
        default_payment_method="pm_new",
        payment_method_updated_at=T0 + days(2),
    )
    desired = decide(snap, T0 + days(2))
    assert desired.case.retry is not None
    assert desired.case.retry.at == T0 + days(2)


# --- defect 4: a card update never bypasses the network rules ---------------------------------


def test_a_card_update_does_not_retry_a_card_the_network_said_never_to_try_again():
    failed = invoice(1, attempts=1)
    snap = snapshot(
        [failed],
        [decline(1, "do_not_honor", advice="do_not_try_again")],
        payment_method_updated_at=T0 + days(1),
    )
    assert decide(snap, T0 + days(1)).case.retry is None


def test_a_card_update_waits_for_the_mastercard_daily_cap():
    failed = invoice(1, attempts=10)
    attempts = [
        decline(1, at=T0 + days(i / 100), brand="mastercard", card="pm_mc") for i in range(10)
    ]
    snap = snapshot(
        [failed],
        attempts,
        default_payment_method="pm_mc",
        payment_method_updated_at=T0 + days(0.2),
    )
    desired = decide(snap, T0 + days(0.2))
    assert desired.case.retry is not None
    assert desired.case.retry.at >= T0 + days(1)  # the oldest of the ten leaves the 24 h window


def test_visa_attempts_on_other_invoices_count_toward_the_card_cap():
    old = [decline(9, at=T0 - days(10) + days(i / 10), card="pm_card_visa") for i in range(20)]
    failed = invoice(1, attempts=1)
    snap = snapshot([failed], [decline(1)], card_history=(*old, decline(1)))
    desired = decide(snap, T0 + days(2))
    assert desired.case.retry is None or desired.case.retry.at >= T0 + days(20)


# --- defect 5: a refused side effect is a fact ------------------------------------------------


def test_a_cancellation_stripe_refused_is_not_requested_again():
    failed = invoice(1, attempts=8)
    snap = in_case(
        snapshot([failed], [decline(1)], cancel_refused={"sub_1": "No such subscription"}),
        case("suspended", since=T0 + days(30), state="escalated"),
    )
    desired = decide(snap, T0 + days(60))
    assert desired.case.level == Level.CANCELLED
    assert not desired.case.cancel_subscriptions
    assert not [c for c in diff(snap, desired) if c.store == "subscriptions"]
    assert "refused" in desired.summary()


# --- defect 6: dwell ------------------------------------------------------------------------


@pytest.mark.parametrize("age", [1, 10, 31, 50, 400])
def test_a_first_decision_is_at_most_notice(age):
    old = invoice(1, opened=T0 - days(age), failed_at=T0 - days(age))
    desired = decide(snapshot([old], [decline(1, at=T0 - days(age))]), T0)
    assert desired.case.level == Level.NOTICE
    assert desired.restrictions == {}
    assert not desired.case.cancel_subscriptions


LADDER = [
    # (current level, held for days, invoice age in days, expected level)
    ("notice", 1, 20, "notice"),
    ("notice", 3, 20, "premium_restricted"),
    ("notice", 3, 5, "notice"),
    ("premium_restricted", 2, 40, "premium_restricted"),
    ("premium_restricted", 3, 40, "read_only"),
    ("read_only", 6, 40, "read_only"),
    ("read_only", 7, 40, "suspended"),
    ("suspended", 7, 44, "suspended"),
    ("suspended", 7, 46, "cancelled"),
    ("read_only", 30, 10, "premium_restricted"),  # consequences come down at once
]


@pytest.mark.parametrize(("level", "held", "age", "expected"), LADDER)
def test_the_ladder_climbs_one_rung_at_a_time(level, held, age, expected):
    now = T0 + days(age)
    snap = in_case(
        snapshot([invoice(1, attempts=8)], [decline(1, "expired_card")]),
        case(level, since=now - days(held)),
    )
    assert decide(snap, now).case.level == expected


# --- defect 8 and the upgrade track ---------------------------------------------------------


def test_the_ladder_is_dated_from_the_base_invoice_not_an_older_upgrade():
    upgrade = invoice(2, reason=UPGRADE, opened=T0 - days(40), failed_at=T0 - days(40))
    base = invoice(1, opened=T0, failed_at=T0)
    snap = in_case(snapshot([upgrade, base], [decline(2), decline(1)]), case("notice"))
    desired = decide(snap, T0 + days(4))
    assert desired.case.level == Level.NOTICE


def test_the_end_of_an_unpaid_upgrade_reverts_it():
    upgrade = invoice(2, reason=UPGRADE, attempts=4, amount=1500)
    snap = in_case(
        snapshot([upgrade], [decline(2, "expired_card")]),
        case("upgrade_restricted", since=T0 + days(3)),
    )
    desired = decide(snap, T0 + days(31))
    assert desired.case.level == Level.UPGRADE_REVERTED
    assert desired.case.revert_upgrades == {"sub_1"}
    assert "core_access" not in desired.restrictions


def test_a_reverted_upgrade_resolves_as_upgrade_reverted():
    voided = invoice(2, status="void", reason=UPGRADE)
    snap = in_case(
        snapshot([voided], [decline(2)], reverted_invoices=frozenset({"in_2"})),
        case("upgrade_reverted"),
    )
    assert decide(snap, T0 + days(31)).case.resolution == "upgrade_reverted"


# --- resolution -----------------------------------------------------------------------------


def test_paid_only_when_every_invoice_of_the_case_is_paid():
    paid = invoice(1, status="paid", attempts=2)
    unpaid = invoice(2, attempts=1)
    snap = in_case(snapshot([paid, unpaid], [decline(1), decline(2)]), case("notice"))
    assert decide(snap, T0 + days(1)).case.resolution == ""
    snap = replace(snap, invoices=(paid, replace(unpaid, status="paid", case_id=10)))
    assert decide(snap, T0 + days(1)).case.resolution == "paid"


def test_the_explanation_names_the_rule_that_decided():
    desired = decide(snapshot([invoice(1)], [decline(1)]), T0 + days(0.5))
    assert desired.rules[0].name == "ladder"
    assert desired.decided_by == "retry"
    assert "insufficient_funds" in str(desired.rules[-1].facts) or desired.case.retry


def test_a_written_off_base_invoice_still_runs_on_to_cancellation():
    """Found by the timelines property: the bad-debt floor lost the next rung's date, and a
    written-off account stayed suspended for good (limbo)."""
    written_off = invoice(1, status="uncollectible", attempts=1)
    snap = in_case(
        snapshot([written_off], [decline(1, "expired_card")]),
        case("suspended", since=T0 + days(13), state="escalated"),
    )
    desired = decide(snap, T0 + days(20))
    assert desired.case.level == Level.SUSPENDED
    assert desired.case.next_review_at == T0 + days(45)
    assert decide(snap, T0 + days(46)).case.level == Level.CANCELLED


def test_requesting_a_look_up_and_seeing_it_requested_decide_the_same_review_time():
    """A second recompute right after the first writes nothing (found by the importer)."""
    failed = invoice(1, attempts=1, failed_at=T0 - days(3), opened=T0 - days(3))
    first = decide(snapshot([failed], []), T0)
    second = decide(snapshot([failed], [], lookups_asked={"in_1:1": T0}), T0 + timedelta(minutes=1))
    assert first.case.next_review_at == second.case.next_review_at


@pytest.mark.parametrize("enforced", [True, False])
def test_a_case_settled_by_cancellation_resolves_in_shadow_mode_too(enforced):
    """Found by the demo on a fresh install (shadow for everyone): a written-off account whose
    subscription Stripe cancelled waited for a standing that shadow mode never sends."""
    written_off = invoice(1, status="uncollectible", attempts=4)
    snap = in_case(
        snapshot(
            [written_off],
            [decline(1, "generic_decline")],
            subscription_status={"sub_1": "canceled"},
            enforced=enforced,
            standing_acknowledged="cancelled" if enforced else "good",
        ),
        case("notice", state="escalated"),
    )
    desired = decide(snap, T0 + days(1))
    assert (desired.case.state, desired.case.resolution) == ("resolved", "written_off")
