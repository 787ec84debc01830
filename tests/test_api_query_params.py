"""The support API's query parameters and bodies: what support asks for is what it gets,
and what it mistypes is a 400 that says so, never a 500 and never a silently wider list."""

import pytest
from rest_framework.test import APIClient

from billing_events.models import Account
from dunning import test_clock as clock_service
from tests.test_support_api import _client_for, _user, failing_customer, url

pytestmark = pytest.mark.django_db
ACCOUNTS = "/api/v1/accounts/"


@pytest.fixture
def reader(db) -> APIClient:
    return _client_for(_user("rita", "support_read"))


@pytest.fixture
def agent(db) -> APIClient:
    return _client_for(_user("alice", "support_actions"))


@pytest.fixture
def accounts(db) -> dict[str, Account]:
    return {
        name: Account.objects.create(stripe_customer_id=f"cus_{name}", email=email)
        for name, email in [
            ("ada", "Ada.Lovelace@example.com"),
            ("bob", "bob@example.com"),
            ("bob2", "bob@example.org"),
            ("nomail", ""),
        ]
    }


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["stripe_customer_id"] for row in response.json()["results"]]


@pytest.mark.parametrize(
    "email, found",
    [
        ("Ada.Lovelace@example.com", ["cus_ada"]),
        ("ada.lovelace@EXAMPLE.com", ["cus_ada"]),  # as the customer typed it
        ("  bob@example.com ", ["cus_bob"]),  # pasted with spaces
        ("bob@example", []),  # exact, not a prefix
        ("example.com", []),
        ("nobody@example.com", []),
    ],
)
def test_accounts_are_found_by_email_exactly_whatever_the_case(reader, accounts, email, found):
    assert ids(reader.get(ACCOUNTS, {"email": email})) == found


def test_email_and_customer_together_must_both_match(reader, accounts):
    both = {"email": "bob@example.com", "stripe_customer": "cus_bob"}
    mismatch = {"email": "bob@example.com", "stripe_customer": "cus_ada"}

    assert ids(reader.get(ACCOUNTS, both)) == ["cus_bob"]
    assert ids(reader.get(ACCOUNTS, mismatch)) == []


@pytest.mark.parametrize(
    "query, field, message",
    [
        ("emial=bob@example.com", "emial", "Unknown query parameter"),
        ("customer=cus_bob", "customer", "takes: email, page, stripe_customer"),
        ("email=bob@example.com&email=ada@example.com", "email", "once"),
        ("stripe_customer=cus_%00", "stripe_customer", "Null characters are not allowed"),
        ("email=%00", "email", "Null characters are not allowed"),
        (f"stripe_customer=cus_{'x' * 300}", "stripe_customer", "no more than 255"),
        (f"email={'x' * 300}", "email", "no more than 255"),
        ("email=", "email", "may not be blank"),
        ("page=abc", "page", "valid integer"),
        ("page=0", "page", "greater than or equal to 1"),
    ],
)
def test_a_bad_account_query_is_a_400_naming_the_parameter(reader, accounts, query, field, message):
    response = reader.get(f"{ACCOUNTS}?{query}")

    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
    assert message in response.json()[field][0]


def test_every_unknown_parameter_is_named(reader, accounts):
    response = reader.get(f"{ACCOUNTS}?a=1&b=2&email=bob@example.com")

    assert response.status_code == 400
    assert sorted(response.json()) == ["a", "b"]


@pytest.mark.parametrize(
    "query, field",
    [("limit=0", "limit"), ("limit=abc", "limit"), ("limt=5", "limt"), ("since=x", "since")],
)
def test_a_bad_timeline_query_is_a_400_naming_the_parameter(reader, accounts, query, field):
    account = accounts["ada"]

    response = reader.get(f"{url(account.pk, 'timeline')}?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_the_dunning_view_takes_no_query_parameters(reader, accounts):
    response = reader.get(f"{url(accounts['ada'].pk, 'dunning')}?verbose=1")

    assert response.status_code == 400
    assert "takes: no query parameters" in response.json()["verbose"][0]


def test_an_unauthenticated_caller_learns_nothing_about_parameters(accounts):
    assert APIClient().get(f"{ACCOUNTS}?bogus=1").status_code == 401


# --- bodies -------------------------------------------------------------------------------
def post_raw(client: APIClient, path: str, body: bytes, content_type="application/json"):
    return client.generic("POST", path, body, content_type=content_type)


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"until": ' + b"[" * 5000 + b"]" * 5000 + b', "reason": "x"}', "nests deeper"),
        (b'{"until": [[[[[[[[[["2030-01-01T00:00:00Z"]]]]]]]]]], "reason": "x"}', "nests"),
        (b'{"until": "2030-01-01T00:00:00Z", "reason": NaN}', "NaN is not a number"),
        (b'\xef\xbb\xbf{"until": "2030-01-01T00:00:00Z", "reason": "x"}', "byte order mark"),
        (b'{"until": "2030-01-01T00:00:00Z", "reason": "x"', "not valid JSON"),
    ],
)
def test_a_hostile_json_body_is_a_400_parse_error(agent, stripe_sender, test_clock, body, message):
    cus = failing_customer(stripe_sender)
    account = Account.objects.get(stripe_customer_id=cus.id)

    response = post_raw(agent, url(account.pk, "pause"), body)

    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    "until",
    [
        "2030-01-01T12:99:00Z",  # well-formed, impossible minute: parse_datetime raises
        "2030-02-30T00:00:00Z",
        "2030-01-01T25:00:00+01:00",
        "2030-01-01T00:00:00+99:00",
    ],
)
def test_an_impossible_until_is_a_field_error(agent, stripe_sender, test_clock, until):
    cus = failing_customer(stripe_sender)
    account = Account.objects.get(stripe_customer_id=cus.id)

    response = agent.post(
        url(account.pk, "pause"), {"until": until, "reason": "goodwill"}, format="json"
    )

    assert response.status_code == 400, response.content
    assert "wrong format" in response.json()["until"][0]


def test_a_nul_in_the_reason_is_a_field_error(agent, stripe_sender, test_clock):
    cus = failing_customer(stripe_sender)
    account = Account.objects.get(stripe_customer_id=cus.id)

    response = agent.post(
        url(account.pk, "pause"),
        {"until": "2030-01-01T00:00:00Z", "reason": "a\x00b"},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()) == ["reason"]


@pytest.mark.parametrize("what", ["pause", "extend-grace"])
def test_an_until_at_the_end_of_time_does_not_break_the_engine(
    agent, stripe_sender, test_clock, what
):
    cus = failing_customer(stripe_sender)
    account = Account.objects.get(stripe_customer_id=cus.id)

    response = agent.post(
        url(account.pk, what), {"until": "9999-12-31T23:59:59Z", "reason": "x"}, format="json"
    )

    assert response.status_code < 500, response.content
    clock_service.advance(seconds=40 * 86400)  # reviews and retries come due
    assert agent.post(url(account.pk, "recompute")).status_code == 200
