"""Invariants of the pure decision core over generated snapshots: any mix of invoices,
statuses, billing reasons, amounts, attempts with any decline data, cases, card updates and
times. `--hypothesis-profile=long` (tests/conftest.py) runs more examples."""

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.compute import compute
from dunning.ladder import held_rung
from dunning.policy import LADDER_ORDER, Level, Track
from dunning.retries import effective_class, on_card
from dunning.snapshot import AttemptView
from tests.core_values import CARD, POLICY, T0, case, days, invoice, snapshot

UPGRADE = "subscription_update"
CODES = [
    "insufficient_funds",
    "do_not_honor",
    "generic_decline",
    "expired_card",
    "fraudulent",
    "stolen_card",
    "authentication_required",
    "card_velocity_exceeded",
    "",
    "some_new_code",
]
CARDS = [CARD, "pm_other", ""]
EXAMPLES = settings(max_examples=500, deadline=None)


def moment(max_days_back: int = 80):
    return st.integers(0, max_days_back * 24).map(lambda hours: T0 - timedelta(hours=hours))


@st.composite
def attempts(draw, invoice_pks):
    return AttemptView(
        invoice_pk=draw(st.sampled_from(invoice_pks)),
        outcome=draw(st.sampled_from(["failed", "failed", "failed", "succeeded"])),
        decline_code=draw(st.sampled_from(CODES)),
        advice_code=draw(st.sampled_from(["", "", "do_not_try_again", "try_again_later"])),
        network_advice_code=draw(st.sampled_from(["", "", "03", "21", "24", "25", "30"])),
        network_decline_code=draw(st.sampled_from(["", "", "05", "51", "57", "14"])),
        payment_method=draw(st.sampled_from(CARDS)),
        attempted_at=draw(moment(60)),
        card_brand=draw(st.sampled_from(["visa", "mastercard", "", "amex"])),
        customer_initiated=draw(st.booleans()),
        pk=draw(st.integers(1, 10**6)),
    )


@st.composite
def snapshots(draw):
    count = draw(st.integers(1, 4))
    case_view = draw(
        st.none()
        | st.builds(
            lambda level, since, paused: case(
                level,
                since=since,
                paused_until=T0 + days(paused) if paused else None,
                pause_reason="support" if paused else "",
            ),
            st.sampled_from([level.value for level in Level if level != Level.NONE]),
            moment(40),
            st.sampled_from([0, 0, 0, 3]),
        )
    )
    invoices = []
    for pk in range(1, count + 1):
        opened = draw(moment(100))
        invoices.append(
            invoice(
                pk,
                status=draw(st.sampled_from(["open", "open", "uncollectible", "paid", "void"])),
                amount=draw(st.sampled_from([0, 300, 500, 501, 4900, 120000])),
                reason=draw(st.sampled_from(["subscription_cycle", UPGRADE, "manual"])),
                attempts=draw(st.integers(0, 6)),
                opened=opened,
                failed_at=draw(st.none() | st.just(opened)),
                updated=draw(st.sampled_from([opened, T0 - timedelta(hours=2), T0])),
                case_id=case_view.pk if case_view and draw(st.booleans()) else None,
                subscription=draw(st.sampled_from(["sub_1", "sub_2"])),
            )
        )
    pks = [i.pk for i in invoices]
    history = tuple(draw(st.lists(attempts(pks), max_size=12)))
    elsewhere = tuple(draw(st.lists(attempts([99]), max_size=25)))  # other invoices, same cards
    return snapshot(
        invoices,
        sorted(history, key=lambda a: a.attempted_at),
        case_view=case_view,
        subscription_status={"sub_1": "past_due", "sub_2": "active"},
        default_payment_method=draw(st.sampled_from([CARD, "pm_other"])),
        payment_method_updated_at=draw(st.none() | moment(40)),
        card_history=tuple(a for a in (*history, *elsewhere) if a.attempted_at > T0 - days(30)),
        cancel_refused=draw(st.sampled_from([{}, {"sub_1": "No such subscription"}])),
        lookups_asked={
            f"in_{pk}:{n}": draw(moment(3))
            for pk in pks
            for n in range(1, 7)
            if draw(st.booleans())
        },
        lookups_ended=frozenset(
            f"in_{pk}:{n}" for pk in pks for n in range(1, 7) if draw(st.booleans())
        ),
    )


now_strategy = st.integers(0, 60 * 24).map(lambda hours: T0 + timedelta(hours=hours))


def outstanding(snap, desired):
    pks = desired.case.invoice_pks
    return [i for i in snap.invoices if i.pk in pks and i.status in ("open", "uncollectible")]


@EXAMPLES
@given(snapshots(), now_strategy)
def test_upgrade_only_debt_never_opens_bad_debt_takes_core_access_or_cancels(snap, now):
    desired = compute(snap, now, POLICY)
    if desired.case is None or desired.case.resolution:
        return
    owed = outstanding(snap, desired)
    if owed and all(i.billing_reason == UPGRADE for i in owed):
        assert desired.case.bad_debt is None
        assert "core_access" not in desired.restrictions
        assert not desired.case.cancel_subscriptions
        assert desired.case.state != "escalated"
        assert desired.standing == "good"


def counted(snap, card, brand_attempts, start, end):
    return [a for a in brand_attempts if start < a.attempted_at <= end]


@EXAMPLES
@given(snapshots(), now_strategy)
def test_every_retry_stays_within_the_card_networks_caps(snap, now):
    desired = compute(snap, now, POLICY)
    plan = desired.case.retry if desired.case else None
    if plan is None:
        return
    card = snap.default_payment_method
    on = [a for a in snap.card_history if on_card(a, card)]
    brands = {a.card_brand for a in on if a.card_brand}
    at = plan.at
    merchant = [a for a in on if not a.customer_initiated]
    # Published limits, written out independently of dunning.network_rules.
    if brands <= {"visa"} or len(brands) != 1:
        assert len([a for a in merchant if at - days(30) < a.attempted_at <= at]) < 20
    if brands <= {"mastercard"} or len(brands) != 1:
        assert len([a for a in on if at - days(1) < a.attempted_at <= at]) < 10
        assert len([a for a in on if at - days(30) < a.attempted_at <= at]) < 35


@EXAMPLES
@given(snapshots(), now_strategy)
def test_no_charge_follows_a_fraud_hard_or_do_not_try_again_decline_on_the_same_card(snap, now):
    desired = compute(snap, now, POLICY)
    plan = desired.case.retry if desired.case else None
    if plan is None:
        return
    card = snap.default_payment_method
    updated = snap.payment_method_updated_at
    target = next(i for i in snap.invoices if i.stripe_invoice_id == plan.stripe_invoice_id)
    declines = [
        a
        for a in (*snap.card_history, *snap.attempts)
        if a.outcome == "failed" and on_card(a, card)
    ]
    for a in declines:
        assert a.advice_code != "do_not_try_again"
        if updated and a.attempted_at < updated:
            continue
        if a.invoice_pk == target.pk or a in snap.card_history:
            assert effective_class(a, POLICY) not in ("fraud", "hard", "auth_required"), a


@EXAMPLES
@given(snapshots(), now_strategy)
def test_no_charge_while_the_latest_failure_has_no_decline_code_yet(snap, now):
    desired = compute(snap, now, POLICY)
    plan = desired.case.retry if desired.case else None
    if plan is None:
        return
    target = next(i for i in snap.invoices if i.stripe_invoice_id == plan.stripe_invoice_id)
    failures = [a for a in snap.attempts if a.outcome == "failed" and a.invoice_pk == target.pk]
    if target.status == "open" and (
        target.attempt_count > len(failures) or (not failures and target.payment_failed)
    ):
        # Only once Stripe was asked, and answered or the bounded wait ran out.
        key = f"{target.stripe_invoice_id}:{max(len(failures), target.attempt_count, 1)}"
        asked = snap.lookups_asked.get(key)
        assert asked is not None
        assert key in snap.lookups_ended or now >= asked + POLICY.retries.unknown_class_wait


@EXAMPLES
@given(snapshots(), now_strategy)
def test_a_first_decision_is_at_most_notice(snap, now):
    snap = replace(snap, case=None, invoices=tuple(replace(i, case_id=None) for i in snap.invoices))
    desired = compute(snap, now, POLICY)
    if desired.case is not None and not desired.case.resolution:
        assert desired.case.level == Level.NOTICE
        assert desired.restrictions == {}
        assert desired.standing == "good"


@EXAMPLES
@given(snapshots(), now_strategy)
def test_paid_only_when_every_invoice_of_the_case_is_settled(snap, now):
    desired = compute(snap, now, POLICY)
    if desired.case is not None and desired.case.resolution in ("paid", "paid_out_of_band"):
        covered = [i for i in snap.invoices if i.pk in desired.case.invoice_pks]
        assert all(i.status in ("paid", "void") for i in covered)
        assert any(i.status == "paid" for i in covered)


@EXAMPLES
@given(snapshots(), now_strategy)
def test_the_ladder_never_skips_a_rung_nor_cuts_a_dwell_short(snap, now):
    """Whatever the amounts (a partial payment or credit included), a rising level is the
    next rung of its track, entered only after the rung below held its minimum dwell."""
    current = snap.case
    desired = compute(snap, now, POLICY)
    if current is None or desired.case is None or desired.case.resolution:
        return
    if desired.case.case_pk != current.pk:
        return
    before, after = Level(current.level), desired.case.level
    if LADDER_ORDER.index(after) <= LADDER_ORDER.index(before):
        return
    ladder_rule = next(r for r in desired.rules if r.name == "ladder")
    rungs = POLICY.ladders[Track(ladder_rule.facts["track"])]
    held = held_rung(rungs, before.value)
    assert held is not None
    assert rungs[held].level == before, "a case moving onto another track starts at its rung"
    assert after == rungs[held + 1].level
    assert now >= current.level_since + rungs[held].min_dwell


@EXAMPLES
@given(snapshots(), now_strategy)
def test_an_open_case_below_the_end_of_its_ladder_always_has_a_next_review(snap, now):
    """No limbo: until the last rung, the case knows when the ladder moves on."""
    desired = compute(snap, now, POLICY)
    if desired.case is None or desired.case.resolution:
        return
    rung = POLICY.rung(desired.case.level)
    if not (rung.cancels or rung.reverts_upgrade):
        assert desired.case.next_review_at is not None
        assert desired.case.next_review_at > now
