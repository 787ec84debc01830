"""NinjaPanel's support API: find an account, read its dunning and timeline, act on it."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from billing_events.models import Account
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import test_clock as clock_service
from dunning.models import Decision, DunningCase, SupportAction
from tests.dunning_helpers import account_of, case_of, deliver_now

pytestmark = pytest.mark.django_db
DAY = 86400


# --- users per role -----------------------------------------------------------------------
def _client_for(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _user(username: str, *groups: str, **flags) -> User:
    user = User.objects.create_user(username, password="x", **flags)
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


@pytest.fixture
def reader(db) -> APIClient:
    return _client_for(_user("rita", "support_read"))


@pytest.fixture
def agent(db) -> APIClient:
    return _client_for(_user("alice", "support_actions"))


@pytest.fixture
def no_role(db) -> APIClient:
    return _client_for(_user("nobody", is_staff=True))


@pytest.fixture
def superuser(db) -> APIClient:
    return _client_for(_user("root", is_staff=True, is_superuser=True))


# --- scenarios ----------------------------------------------------------------------------
def failing_customer(sender, customer_id: str = "cus_QXg1o8vcGmoR32") -> StripeCustomer:
    cus = StripeCustomer(id=customer_id, subscription=f"sub_{customer_id}")
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    return cus


def advance(days: float) -> None:
    clock_service.advance(seconds=days * DAY)


def url(account_id: int, what: str) -> str:
    return f"/api/v1/accounts/{account_id}/{what}/"


# --- finding an account -------------------------------------------------------------------
def test_finds_the_account_of_a_stripe_customer_with_its_open_case(
    reader, stripe_sender, test_clock
):
    cus = failing_customer(stripe_sender)
    failing_customer(stripe_sender, "cus_other")

    body = reader.get("/api/v1/accounts/", {"stripe_customer": cus.id}).json()

    account = account_of(cus)
    assert body["count"] == 1
    (found,) = body["results"]
    assert (found["id"], found["stripe_customer_id"]) == (account.pk, cus.id)
    assert found["open_case"]["id"] == case_of(cus).pk
    assert (found["open_case"]["state"], found["open_case"]["level"]) == ("retrying", "notice")
    assert found["open_case"]["decline_class"] == "soft"


def test_an_unknown_customer_gives_an_empty_list(reader, stripe_sender, test_clock):
    failing_customer(stripe_sender)

    response = reader.get("/api/v1/accounts/", {"stripe_customer": "cus_nobody"})

    assert response.status_code == 200
    assert (response.json()["count"], response.json()["results"]) == (0, [])


def test_without_a_filter_accounts_are_listed_a_page_at_a_time(reader, db):
    Account.objects.bulk_create([Account(stripe_customer_id=f"cus_{n:03d}") for n in range(60)])

    first = reader.get("/api/v1/accounts/").json()
    second = reader.get(first["next"]).json()

    assert (first["count"], len(first["results"]), len(second["results"])) == (60, 50, 10)
    assert first["results"][0]["open_case"] is None


# --- an account's dunning -----------------------------------------------------------------
def test_dunning_shows_state_invoices_next_retry_restrictions_and_the_explanation(
    reader, stripe_sender, test_clock
):
    cus = failing_customer(stripe_sender)
    advance(9)
    case = case_of(cus)

    body = reader.get(url(account_of(cus).pk, "dunning")).json()

    assert (body["case_id"], body["state"], body["level"], body["resolution"]) == (
        case.pk,
        "retrying",
        case.level,
        "",
    )
    assert body["stripe_customer_id"] == cus.id
    (invoice,) = body["open_invoices"]
    assert invoice["stripe_invoice_id"] == cus.invoice_id
    assert (invoice["status"], invoice["amount_remaining"], invoice["currency"]) == (
        "open",
        2000,
        "usd",
    )
    assert invoice["billing_reason"] == "subscription_cycle"
    assert invoice["attempt_count"] >= 2
    assert body["next_retry"] == {
        "at": case.next_retry_at.isoformat().replace("+00:00", "Z"),
        "decline_class": "soft",
    }
    assert {r["code"] for r in body["restrictions"]} == set(
        case.account.restrictions.values_list("code", flat=True)
    )
    assert body["restrictions"], "nine days in, something is restricted"
    assert set(body["restrictions"][0]) == {"code", "level", "reason", "since"}
    newest = Decision.objects.filter(account=case.account).latest("decided_at", "pk")
    assert body["last_decision"]["id"] == newest.pk
    assert body["last_decision"]["summary"] == newest.summary
    assert body["last_decision"]["explanation"] == newest.explanation
    assert body["last_recompute_at"] == newest.decided_at.isoformat().replace("+00:00", "Z")
    assert body["policy_version"] == newest.policy_version
    assert (body["paused_until"], body["pause_reason"]) == (None, "")
    assert (body["grace_until"], body["grace_reason"]) == (None, "")
    assert body["bad_debt_episode"] is None


def test_dunning_shows_the_open_bad_debt_episode(reader, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    advance(3)
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.marked_uncollectible", status="uncollectible", attempt_count=2
        ),
    )

    body = reader.get(url(account_of(cus).pk, "dunning")).json()

    assert body["state"] == "escalated"
    assert body["bad_debt_episode"]["reason"] == "marked_uncollectible"
    assert body["bad_debt_episode"]["amount"] == {"usd": 2000}
    assert body["open_invoices"][0]["status"] == "uncollectible"


def test_an_account_without_a_case_answers_with_state_null(reader, db):
    account = Account.objects.create(stripe_customer_id="cus_quiet")

    response = reader.get(url(account.pk, "dunning"))

    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["case_id"], body["last_decision"], body["next_retry"]) == (
        None,
        None,
        None,
        None,
    )
    assert (body["open_invoices"], body["restrictions"]) == ([], [])


# --- recompute ----------------------------------------------------------------------------
def test_recompute_of_a_converged_account_changes_nothing_and_is_audited(
    agent, stripe_sender, test_clock
):
    cus = failing_customer(stripe_sender)
    account = account_of(cus)
    decisions = Decision.objects.count()

    response = agent.post(url(account.pk, "recompute"))

    assert response.status_code == 200
    assert response.json() == {
        "account_id": account.pk,
        "action": "recompute",
        "actor": "alice",
        "decision_id": None,
        "summary": "",
        "changes": [],
    }
    assert Decision.objects.count() == decisions
    action = SupportAction.objects.get()
    assert (action.account_id, action.actor, action.action) == (account.pk, "alice", "recompute")


def test_recompute_after_drift_answers_with_the_diff_it_applied(agent, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    account = account_of(cus)
    level = case_of(cus).level
    DunningCase.objects.filter(pk=case_of(cus).pk).update(level="none")  # drift

    body = agent.post(url(account.pk, "recompute")).json()

    assert {"store": "case", "field": "level", "from": "none", "to": level} in body["changes"]
    decision = Decision.objects.get(pk=body["decision_id"])
    assert (decision.trigger, decision.actor) == ("NINJAPANEL_BUTTON", "support:alice")
    assert body["summary"] == decision.summary
    assert case_of(cus).level == level
    action = SupportAction.objects.get()
    assert action.actor == "alice"
    assert action.result["decision_id"] == decision.pk
    assert action.result["changes"] == body["changes"]


# --- pause and grace ----------------------------------------------------------------------
def test_pause_holds_the_case_and_is_audited(agent, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    account = account_of(cus)
    until = clock.now() + timedelta(days=10)

    response = agent.post(
        url(account.pk, "pause"),
        {"until": until.isoformat(), "reason": "promised to pay on the 12th"},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["action"], body["actor"], body["reason"]) == (
        "pause_dunning",
        "alice",
        "promised to pay on the 12th",
    )
    assert body["until"] == until.isoformat().replace("+00:00", "Z")
    assert {"store": "case", "field": "next_retry_at"}.items() <= next(
        change for change in body["changes"] if change["field"] == "next_retry_at"
    ).items()
    assert "retries paused by support" in body["summary"]
    case = case_of(cus)
    assert (case.paused_until, case.pause_reason) == (until, "promised to pay on the 12th")
    assert case.next_retry_at is None
    action = SupportAction.objects.get()
    assert (action.actor, action.action) == ("alice", "pause_dunning")
    assert action.payload == {"paused_until": until.isoformat(), "pause_reason": body["reason"]}

    shown = agent.get(url(account.pk, "dunning")).json()
    assert (shown["paused_until"], shown["pause_reason"]) == (body["until"], body["reason"])


def test_extend_grace_holds_the_level_and_is_audited(agent, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    account = account_of(cus)
    until = clock.now() + timedelta(days=20)

    response = agent.post(
        url(account.pk, "extend-grace"),
        {"until": until.isoformat(), "reason": "in hospital"},
        format="json",
    )
    advance(15)

    assert response.status_code == 200, response.content
    assert (response.json()["action"], response.json()["actor"]) == ("extend_grace", "alice")
    case = case_of(cus)
    assert (case.grace_until, case.grace_reason, case.level) == (until, "in hospital", "notice")
    assert SupportAction.objects.get().action == "extend_grace"


@pytest.mark.parametrize("what", ["pause", "extend-grace"])
def test_holds_need_an_open_case(agent, db, what):
    account = Account.objects.create(stripe_customer_id="cus_quiet")

    response = agent.post(
        url(account.pk, what),
        {"until": "2030-01-01T00:00:00Z", "reason": "goodwill"},
        format="json",
    )

    assert response.status_code == 409
    assert "no open dunning case" in response.json()["detail"]
    assert SupportAction.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"until": "2030-01-01T00:00:00Z"}, "reason"),
        ({"until": "2030-01-01T00:00:00Z", "reason": ""}, "reason"),
        ({"until": "2030-01-01T00:00:00Z", "reason": "   "}, "reason"),
        ({"reason": "goodwill"}, "until"),
        ({"until": "2030-01-01T00:00:00", "reason": "goodwill"}, "until"),  # no timezone
        ({"until": "next tuesday", "reason": "goodwill"}, "until"),
        ({"until": "2026-11-01T00:00:00Z", "reason": "goodwill"}, "until"),  # in the past
    ],
)
def test_a_bad_hold_body_gets_field_errors(agent, stripe_sender, test_clock, body, field):
    cus = failing_customer(stripe_sender)

    response = agent.post(url(account_of(cus).pk, "pause"), body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert SupportAction.objects.count() == 0


def test_until_in_the_past_is_refused_with_a_reason(agent, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    past = clock.now() - timedelta(minutes=1)

    response = agent.post(
        url(account_of(cus).pk, "extend-grace"),
        {"until": past.isoformat(), "reason": "late"},
        format="json",
    )

    assert response.json() == {"until": ["must be in the future"]}


# --- permissions and errors ---------------------------------------------------------------
READS = ["dunning", "timeline"]
ACTIONS = ["recompute", "pause", "extend-grace"]
HOLD = {"until": "2030-01-01T00:00:00Z", "reason": "goodwill"}


def _call(client: APIClient, account_id: int, what: str):
    if what in READS:
        return client.get(url(account_id, what))
    return client.post(url(account_id, what), HOLD, format="json")


@pytest.mark.parametrize("what", READS + ACTIONS)
def test_no_token_gets_401(db, what):
    account = Account.objects.create(stripe_customer_id="cus_x")

    response = _call(APIClient(), account.pk, what)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_no_token_cannot_list_accounts(db):
    assert APIClient().get("/api/v1/accounts/").status_code == 401


@pytest.mark.parametrize("what", READS + ACTIONS)
def test_a_user_without_a_support_role_gets_403(no_role, what):
    account = Account.objects.create(stripe_customer_id="cus_x")

    response = _call(no_role, account.pk, what)

    assert response.status_code == 403
    assert "role" in response.json()["detail"]


@pytest.mark.parametrize("what", ACTIONS)
def test_support_read_cannot_act(reader, what):
    account = Account.objects.create(stripe_customer_id="cus_x")

    response = _call(reader, account.pk, what)

    assert response.status_code == 403
    assert "support_actions" in response.json()["detail"]
    assert SupportAction.objects.count() == 0


@pytest.mark.parametrize("client_name", ["agent", "superuser"])
def test_support_actions_and_superusers_may_read_and_act(
    request, stripe_sender, test_clock, client_name
):
    client = request.getfixturevalue(client_name)
    account = account_of(failing_customer(stripe_sender))

    assert client.get(url(account.pk, "dunning")).status_code == 200
    assert client.get("/api/v1/accounts/").status_code == 200
    assert client.post(url(account.pk, "recompute")).status_code == 200


@pytest.mark.parametrize("what", READS + ACTIONS)
def test_an_unknown_account_gets_404(superuser, what):
    response = _call(superuser, 987654, what)

    assert response.status_code == 404
    assert response.json() == {"detail": "No account with this id."}
    assert SupportAction.objects.count() == 0


# --- timeline -----------------------------------------------------------------------------
def test_the_timeline_merges_every_source_in_time_order(agent, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    advance(4)  # retries on days 1 and 3, the ladder's first step
    account = account_of(cus)
    agent.post(
        url(account.pk, "pause"),
        {"until": (clock.now() + timedelta(days=3)).isoformat(), "reason": "promised"},
        format="json",
    )

    body = agent.get(url(account.pk, "timeline")).json()

    entries = body["entries"]
    assert (body["account_id"], body["truncated"]) == (account.pk, False)
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    assert {e["kind"] for e in entries} == {
        "webhook_event",
        "payment_attempt",
        "decision",
        "case_transition",
        "outcome_event",
        "side_effect",
        "support_action",
        "notice",  # the payment-failed message the engine planned
    }
    first = entries[0]
    assert (first["kind"], first["detail"]["type"]) == ("webhook_event", "charge.failed")
    attempts = [e for e in entries if e["kind"] == "payment_attempt"]
    assert len(attempts) == 3  # the webhook's failure and the two retries
    assert attempts[0]["detail"]["decline_code"] == "insufficient_funds"
    assert {"advice_code", "network_advice_code", "amount", "currency"} <= set(
        attempts[0]["detail"]
    )
    transition = next(e for e in entries if e["kind"] == "case_transition")
    assert (transition["detail"]["from"], transition["detail"]["to"]) == ("", "retrying")
    assert transition["detail"]["trigger"] == "PAYMENT_FAILED"
    retry = next(e for e in entries if e["kind"] == "side_effect")
    assert {"kind", "status", "attempts", "last_error", "next_attempt_at"} <= set(retry["detail"])
    # What a decision caused follows it, before the next decision.
    decisions = [i for i, e in enumerate(entries) if e["kind"] == "decision"]
    caused = [
        e
        for e in entries[decisions[0] + 1 : decisions[1]]
        if e["kind"] not in {"webhook_event", "payment_attempt"}
    ]
    assert {e["kind"] for e in caused} == {
        "case_transition",
        "outcome_event",
        "side_effect",
        "notice",
    }
    assert {e["detail"]["decision_id"] for e in caused} == {
        entries[decisions[0]]["detail"]["decision_id"]
    }
    # The support action comes right before the decision it caused.
    kinds = [e["kind"] for e in entries]
    audit = kinds.index("support_action")
    assert entries[audit]["detail"]["actor"] == "alice"
    assert kinds[audit + 1] == "decision"
    assert entries[audit + 1]["detail"]["actor"] == "support:alice"


def test_the_timeline_shows_the_newest_entries_up_to_the_limit(reader, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    advance(6)
    account = account_of(cus)
    everything = reader.get(url(account.pk, "timeline")).json()["entries"]

    body = reader.get(url(account.pk, "timeline"), {"limit": 3}).json()

    assert body["truncated"] is True
    assert body["entries"] == everything[-3:]
    assert reader.get(url(account.pk, "timeline"), {"limit": 0}).status_code == 400


def _queries(client: APIClient, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


@pytest.mark.parametrize(
    ("what", "most"),
    # token and groups, then the account and one query per source
    [("timeline", 2 + 1 + 8), ("dunning", 2 + 6), ("notifications", 2 + 3)],
)
def test_reads_cost_the_same_queries_whatever_the_history(
    reader, stripe_sender, test_clock, django_assert_max_num_queries, what, most
):
    long = account_of(failing_customer(stripe_sender, "cus_long"))
    advance(25)  # the whole soft schedule, ladder steps, side effects
    short = account_of(failing_customer(stripe_sender, "cus_short"))  # one failure, just now
    assert Decision.objects.filter(account=long).count() >= 10
    assert Decision.objects.filter(account=short).count() == 1

    with django_assert_max_num_queries(most):
        reader.get(url(short.pk, what))
    with django_assert_max_num_queries(most):
        reader.get(url(long.pk, what))
    assert _queries(reader, url(short.pk, what)) == _queries(reader, url(long.pk, what))


# --- the schema ---------------------------------------------------------------------------
def test_the_openapi_schema_documents_the_support_api(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/v1/accounts/",
        "/api/v1/accounts/{account_id}/dunning/",
        "/api/v1/accounts/{account_id}/timeline/",
        "/api/v1/accounts/{account_id}/notifications/",
        "/api/v1/accounts/{account_id}/recompute/",
        "/api/v1/accounts/{account_id}/pause/",
        "/api/v1/accounts/{account_id}/extend-grace/",
    ]:
        assert path in paths
    pause = paths["/api/v1/accounts/{account_id}/pause/"]["post"]
    assert {"200", "400", "401", "403", "404", "409"} <= set(pause["responses"])
    find = paths["/api/v1/accounts/"]["get"]
    assert {p["name"] for p in find["parameters"]} == {"stripe_customer", "email", "page"}
    assert "400" in find["responses"]
    assert "tokenAuth" in response.json()["components"]["securitySchemes"]


def test_the_api_docs_page_answers_with_its_assets_served_here(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "/api/schema/" in page
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', page)
    assert assets and all(asset.startswith("/static/") for asset in assets), assets
    assert "cdn" not in page.lower()
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        b"".join(served.streaming_content)
