"""The notice planner on plain values: which messages, keyed how, due when. No database."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.notifications.plan import (
    PRIORITY,
    CardSituation,
    CaseSituation,
    plan_notices,
)
from dunning.policy import Level, NoticeRules, Track, notice_rules_from_env

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RULES = NoticeRules()
NO_CARD = CardSituation(None, None)

OPEN_SOFT = CaseSituation(
    anchor="inv7",
    open=True,
    opened_at=NOW,
    track=Track.BASE,
    decline_class="soft",
    class_known=True,
    level=Level.NOTICE,
    level_since=NOW,
    next_step=(Level.PREMIUM_RESTRICTED, NOW + 7 * DAY),
    next_retry_at=NOW + DAY,
    amount=4900,
    currency="eur",
    invoice="in_1",
)


def plan(case=OPEN_SOFT, card=NO_CARD, now=NOW, rules=RULES):
    return {
        n.key: (n.kind, n.due_at) for n in plan_notices(case=case, card=card, now=now, rules=rules)
    }


@pytest.mark.parametrize(
    ("name", "case", "now", "expected"),
    [
        (
            "a new soft case: the failure now, the first step three days ahead",
            OPEN_SOFT,
            NOW,
            {
                "payment_failed:inv7:soft": ("payment_failed", NOW),
                "step_ahead:inv7:premium_restricted": ("step_ahead", NOW + 4 * DAY),
            },
        ),
        (
            "the decline code is still being looked up: no failure message yet",
            replace(OPEN_SOFT, class_known=False),
            NOW,
            {"step_ahead:inv7:premium_restricted": ("step_ahead", NOW + 4 * DAY)},
        ),
        (
            "the class turned hard: a new failure message with the new reason",
            replace(OPEN_SOFT, decline_class="hard", opened_at=NOW - 2 * DAY),
            NOW,
            {
                "payment_failed:inv7:hard": ("payment_failed", NOW - 2 * DAY),
                "step_ahead:inv7:premium_restricted": ("step_ahead", NOW + 4 * DAY),
            },
        ),
        (
            "the cancellation ahead: the final notice seven days before",
            replace(
                OPEN_SOFT,
                level=Level.SUSPENDED,
                level_since=NOW - 10 * DAY,
                next_step=(Level.CANCELLED, NOW + 15 * DAY),
            ),
            NOW,
            {
                "payment_failed:inv7:soft": ("payment_failed", NOW),
                "final_notice:inv7": ("final_notice", NOW + 8 * DAY),
            },
        ),
        (
            "steps closer than the lead: warned as soon as the rung below is in force",
            replace(OPEN_SOFT, next_step=(Level.PREMIUM_RESTRICTED, NOW + DAY)),
            NOW,
            {
                "payment_failed:inv7:soft": ("payment_failed", NOW),
                "step_ahead:inv7:premium_restricted": ("step_ahead", NOW),
            },
        ),
        (
            "the step's moment has come: nothing ahead to warn of",
            replace(OPEN_SOFT, next_step=(Level.PREMIUM_RESTRICTED, NOW)),
            NOW,
            {"payment_failed:inv7:soft": ("payment_failed", NOW)},
        ),
        (
            "a failed upgrade: its own rungs, never a final notice",
            replace(
                OPEN_SOFT,
                track=Track.UPGRADE,
                next_step=(Level.UPGRADE_RESTRICTED, NOW + 3 * DAY),
            ),
            NOW,
            {
                "payment_failed:inv7:soft": ("payment_failed", NOW),
                "step_ahead:inv7:upgrade_restricted": ("step_ahead", NOW),
            },
        ),
        (
            "paid: the recovered message, nothing else",
            replace(OPEN_SOFT, open=False, resolution="paid"),
            NOW,
            {"recovered:inv7": ("recovered", NOW)},
        ),
        (
            "paid out of band while in bad debt: the bad-debt-paid message",
            replace(OPEN_SOFT, open=False, resolution="paid_out_of_band", was_bad_debt=True),
            NOW,
            {"bad_debt_paid:inv7": ("bad_debt_paid", NOW)},
        ),
        (
            "cancelled at the end of the ladder: nothing after resolution",
            replace(OPEN_SOFT, open=False, resolution="cancelled"),
            NOW,
            {},
        ),
        (
            "an upgrade reverted: nothing after resolution",
            replace(OPEN_SOFT, open=False, resolution="upgrade_reverted", track=Track.UPGRADE),
            NOW,
            {},
        ),
    ],
)
def test_case_notices(name, case, now, expected):
    assert plan(case=case, now=now) == expected, name


EXPIRES = datetime(2027, 1, 1, tzinfo=UTC)  # a card with exp 12/2026


@pytest.mark.parametrize(
    ("name", "card", "now", "expected_days"),
    [
        ("told a month ahead: 14 and 3 days before", CardSituation(EXPIRES, None), NOW, [14, 3]),
        (
            "learned 10 days before: the 14-day one at once, the 3-day one on its day",
            CardSituation(EXPIRES, None),
            EXPIRES - 10 * DAY,
            [14, 3],
        ),
        (
            "learned 2 days before: only the 3-day one, once",
            CardSituation(EXPIRES, None),
            EXPIRES - 2 * DAY,
            [3],
        ),
        ("already expired: nothing", CardSituation(EXPIRES, None), EXPIRES, []),
        (
            "a new card in the expiry month: nothing",
            CardSituation(EXPIRES, EXPIRES - 20 * DAY),
            EXPIRES - 15 * DAY,
            [],
        ),
        (
            "a card change long before says nothing about this card",
            CardSituation(EXPIRES, EXPIRES - 200 * DAY),
            NOW,
            [14, 3],
        ),
    ],
)
def test_card_expiry_notices(name, card, now, expected_days):
    notices = plan_notices(case=None, card=card, now=now, rules=RULES)
    assert [n.facts["days_left"] for n in notices] == expected_days, name
    for notice in notices:
        assert notice.kind == "card_expiring"
        assert notice.due_at == EXPIRES - notice.facts["days_left"] * DAY
        assert notice.key == f"card_expiring:2027-01-01:{notice.facts['days_left']}"


def test_failed_upgrade_messages_speak_of_the_upgrade():
    upgrade = replace(OPEN_SOFT, track=Track.UPGRADE)
    for notice in plan_notices(case=upgrade, card=NO_CARD, now=NOW, rules=RULES):
        assert notice.facts["upgrade"] is True
    base = plan_notices(case=OPEN_SOFT, card=NO_CARD, now=NOW, rules=RULES)
    assert all(n.facts["upgrade"] is False for n in base)


def test_the_failure_message_carries_the_reason_and_the_next_retry():
    [failed] = [
        n
        for n in plan_notices(case=OPEN_SOFT, card=NO_CARD, now=NOW, rules=RULES)
        if n.kind == "payment_failed"
    ]
    assert failed.facts == {
        "amount": 4900,
        "currency": "eur",
        "invoice": "in_1",
        "decline_class": "soft",
        "next_retry_at": (NOW + DAY).isoformat(),
        "upgrade": False,
    }


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, NoticeRules()),
        (
            {"DUNNING_NOTICE_LEAD_DAYS": "5", "DUNNING_FINAL_NOTICE_LEAD_DAYS": "10"},
            NoticeRules(step_lead=5 * DAY, final_lead=10 * DAY),
        ),
        (
            {"DUNNING_CARD_EXPIRY_NOTICE_DAYS": "3, 30,7"},
            NoticeRules(card_expiry_leads=(30 * DAY, 7 * DAY, 3 * DAY)),
        ),
    ],
)
def test_lead_times_come_from_the_environment(env, expected):
    assert notice_rules_from_env(env) == expected


def test_the_most_important_kind_goes_first():
    order = sorted(PRIORITY, key=PRIORITY.get)
    assert order[:3] == ["final_notice", "step_ahead", "payment_failed"]
    assert order[-1] == "card_expiring"


# Generated situations: whatever the case and card, the plan keeps its promises.
levels = st.sampled_from(list(Level))
moments = st.integers(-60, 60).map(lambda days: NOW + days * DAY)
situations = st.builds(
    CaseSituation,
    anchor=st.just("inv1"),
    open=st.booleans(),
    opened_at=st.integers(-60, 0).map(lambda days: NOW + days * DAY),
    track=st.sampled_from(list(Track)),
    decline_class=st.sampled_from(["soft", "hard", "fraud", "auth_required"]),
    class_known=st.booleans(),
    level=levels,
    level_since=st.one_of(st.none(), st.integers(-60, 0).map(lambda days: NOW + days * DAY)),
    next_step=st.one_of(st.none(), st.tuples(levels, moments)),
    next_retry_at=st.one_of(st.none(), moments),
    amount=st.integers(1, 10**6),
    currency=st.sampled_from(["eur", "usd", "jpy"]),
    invoice=st.just("in_1"),
    resolution=st.sampled_from(["", "paid", "paid_out_of_band", "cancelled", "voided"]),
    was_bad_debt=st.booleans(),
)
cards = st.builds(
    CardSituation,
    st.one_of(st.none(), moments),
    st.one_of(st.none(), moments),
)


@settings(max_examples=300, deadline=None)
@given(case=st.one_of(st.none(), situations), card=cards)
def test_any_plan_keeps_its_promises(case, card):
    notices = plan_notices(case=case, card=card, now=NOW, rules=RULES)
    keys = [n.key for n in notices]
    assert len(keys) == len(set(keys))  # one message per key
    for notice in notices:
        if notice.kind in ("step_ahead", "final_notice"):
            # A step is only ever announced before it takes effect, never after.
            assert datetime.fromisoformat(notice.facts["takes_effect_at"]) > NOW
            assert notice.due_at < datetime.fromisoformat(notice.facts["takes_effect_at"])
        if notice.kind == "card_expiring":
            assert card.expiring_at > NOW and notice.due_at < card.expiring_at
    if case is not None and not case.open:
        # After resolution only the good news.
        assert {n.kind for n in notices} <= {"recovered", "bad_debt_paid", "card_expiring"}
    if case is None or case.track != Track.UPGRADE:
        return
    # A failed upgrade speaks of the upgrade only.
    assert all(n.facts.get("upgrade") for n in notices if n.kind != "card_expiring")
