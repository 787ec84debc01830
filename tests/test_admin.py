"""The support admin: case filters, read-only records, and actions that go through the engine."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from billing_events.scenarios import StripeCustomer
from core import clock
from dunning.models import Decision, DunningCase, SupportAction
from tests.dunning_helpers import case_of, deliver_now

pytestmark = pytest.mark.django_db
CASES = "/admin/dunning/dunningcase/"


def failing_customer(sender, customer_id: str = "cus_QXg1o8vcGmoR32") -> StripeCustomer:
    cus = StripeCustomer(id=customer_id, subscription=f"sub_{customer_id}")
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    return cus


def staff_client(username: str, *groups: str) -> Client:
    user = User.objects.create_user(username, password="x", is_staff=True)
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    client = Client()
    client.force_login(user)
    return client


def shown(response) -> list[DunningCase]:
    return list(response.context["cl"].result_list)


# --- the case list ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "",
        "state__exact=retrying",
        "level__exact=notice",
        "decline_class__exact=soft",
        "bad_debt=yes",
        "bad_debt=no",
        "stuck=yes",
        "resolution__exact=paid",
        "q=cus_QXg1o8vcGmoR32",
    ],
)
def test_the_case_list_renders_with_each_filter(admin_client, stripe_sender, test_clock, query):
    failing_customer(stripe_sender)

    response = admin_client.get(f"{CASES}?{query}")

    assert response.status_code == 200  # an unknown filter would redirect to ?e=1


def test_search_by_customer_id_finds_its_case(admin_client, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    failing_customer(stripe_sender, "cus_someone_else")

    response = admin_client.get(CASES, {"q": cus.id})

    assert shown(response) == [case_of(cus)]


def test_the_bad_debt_filter_finds_escalated_cases(admin_client, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    other = failing_customer(stripe_sender, "cus_someone_else")
    DunningCase.objects.filter(pk=case_of(cus).pk).update(state="escalated")

    assert shown(admin_client.get(CASES, {"bad_debt": "yes"})) == [case_of(cus)]
    assert shown(admin_client.get(CASES, {"bad_debt": "no"})) == [case_of(other)]


def test_a_case_lifting_with_no_decision_for_an_hour_is_stuck(
    admin_client, stripe_sender, test_clock
):
    cus = failing_customer(stripe_sender)
    failing_customer(stripe_sender, "cus_someone_else")
    case = case_of(cus)
    DunningCase.objects.filter(pk=case.pk).update(state="lifting")

    assert shown(admin_client.get(CASES, {"stuck": "yes"})) == []  # decided just now

    Decision.objects.filter(pk=case.last_decision_id).update(
        decided_at=clock.now() - timedelta(hours=2)
    )
    assert shown(admin_client.get(CASES, {"stuck": "yes"})) == [case]


def test_the_case_page_shows_the_explanation_transitions_and_timeline(
    admin_client, stripe_sender, test_clock
):
    cus = failing_customer(stripe_sender)
    case = case_of(cus)

    response = admin_client.get(f"{CASES}{case.pk}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert case.last_decision.summary in page
    assert "insufficient_funds" in page  # the facts of the rules, and the timeline
    assert "charge.failed (processed)" in page  # the timeline
    assert "PAYMENT_FAILED" in page  # the transition inline
    assert 'name="_save"' not in page  # read-only


# --- read-only everywhere -----------------------------------------------------------------
READ_ONLY = [
    "dunning/dunningcase",
    "dunning/decision",
    "dunning/casetransition",
    "dunning/outboxitem",
    "dunning/baddebtepisode",
    "dunning/outcomeevent",
    "dunning/supportaction",
    "dunning/accountstanding",
    "dunning/baddebtpayment",
    "entitlements/restriction",
]


@pytest.mark.parametrize("model", READ_ONLY)
def test_engine_records_are_listed_and_read_only(admin_client, stripe_sender, test_clock, model):
    cus = failing_customer(stripe_sender)
    admin_client.post(CASES, {"action": "recompute", "_selected_action": [case_of(cus).pk]})

    listing = admin_client.get(f"/admin/{model}/")

    assert listing.status_code == 200
    assert f"/admin/{model}/add/" not in listing.content.decode()
    assert admin_client.get(f"/admin/{model}/add/").status_code == 403
    rows = listing.context["cl"].result_list
    if rows:
        pk = rows[0].pk
        assert admin_client.get(f"/admin/{model}/{pk}/change/").status_code == 200
        assert admin_client.post(f"/admin/{model}/{pk}/change/", {}).status_code == 403
        assert admin_client.get(f"/admin/{model}/{pk}/delete/").status_code == 403


# --- actions ------------------------------------------------------------------------------
def test_recompute_action_runs_the_engine_and_is_audited(admin_client, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    case = case_of(cus)
    DunningCase.objects.filter(pk=case.pk).update(level="none")  # drift

    response = admin_client.post(
        CASES, {"action": "recompute", "_selected_action": [case.pk]}, follow=True
    )

    assert "Recomputed 1 account(s): 1 changed, 0 already up to date." in response.content.decode()
    assert case_of(cus).level == "notice"
    action = SupportAction.objects.get()
    assert (action.account_id, action.actor, action.action) == (
        case.account_id,
        "admin",
        "recompute",
    )
    assert action.result["decision_id"] == case_of(cus).last_decision_id


def test_pause_action_asks_for_a_reason_then_pauses(admin_client, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    case = case_of(cus)
    chosen = {"action": "pause_dunning", "_selected_action": [case.pk]}

    form_page = admin_client.post(CASES, chosen)

    assert form_page.status_code == 200
    assert 'name="reason"' in form_page.content.decode()
    assert cus.id in form_page.content.decode()
    assert SupportAction.objects.count() == 0

    done = admin_client.post(
        CASES, {**chosen, "apply": "1", "reason": "promised to pay", "days": "7"}, follow=True
    )

    assert "Pause dunning until" in done.content.decode()
    case = case_of(cus)
    assert (case.paused_until, case.pause_reason) == (
        clock.now() + timedelta(days=7),
        "promised to pay",
    )
    assert case.next_retry_at is None
    action = SupportAction.objects.get()
    assert (action.actor, action.action) == ("admin", "pause_dunning")
    assert action.payload["pause_reason"] == "promised to pay"


def test_pause_without_a_reason_shows_the_form_again(admin_client, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    chosen = {"action": "pause_dunning", "_selected_action": [case_of(cus).pk]}

    response = admin_client.post(CASES, {**chosen, "apply": "1", "reason": "", "days": "7"})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert case_of(cus).paused_until is None
    assert SupportAction.objects.count() == 0


def test_extend_grace_action_takes_the_days_given(admin_client, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    chosen = {"action": "extend_grace", "_selected_action": [case_of(cus).pk]}

    admin_client.post(CASES, {**chosen, "apply": "1", "reason": "hospital", "days": "14"})

    case = case_of(cus)
    assert (case.grace_until, case.grace_reason) == (clock.now() + timedelta(days=14), "hospital")
    assert SupportAction.objects.get().action == "extend_grace"


def test_holds_skip_closed_cases(admin_client, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    DunningCase.objects.filter(pk=case_of(cus).pk).update(state="resolved", resolution="paid")
    chosen = {"action": "pause_dunning", "_selected_action": [case_of(cus).pk]}

    response = admin_client.post(
        CASES, {**chosen, "apply": "1", "reason": "x", "days": "7"}, follow=True
    )

    assert "is closed" in response.content.decode()
    assert SupportAction.objects.count() == 0


# --- roles --------------------------------------------------------------------------------
def _actions(response) -> set[str]:
    form = response.context["action_form"]  # None when the user has no action at all
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def test_support_read_sees_cases_but_no_actions(stripe_sender, test_clock):
    failing_customer(stripe_sender)
    client = staff_client("rita", "support_read")

    response = client.get(CASES)

    assert response.status_code == 200
    assert len(shown(response)) == 1
    assert _actions(response) == set()
    assert client.get("/admin/entitlements/restriction/").status_code == 200


def test_support_actions_gets_the_actions(stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    client = staff_client("alice", "support_actions")

    response = client.get(CASES)

    assert _actions(response) == {"recompute", "pause_dunning", "extend_grace"}
    client.post(CASES, {"action": "recompute", "_selected_action": [case_of(cus).pk]})
    assert SupportAction.objects.get().actor == "alice"


def test_staff_without_a_support_role_cannot_see_cases(db):
    assert staff_client("nobody").get(CASES).status_code == 403
