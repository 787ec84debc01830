"""Policy versions through the API and the engine: who may change the policy, bad documents
write nothing, activation is audited, and a case finishes on the version it started with
unless the activation migrates it."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from billing_events.models import PaymentAttempt
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import policy_versions
from dunning import test_clock as clock_service
from dunning.engine import handle
from dunning.models import Decision, PolicyVersion, SupportAction
from dunning.policy import current_policy
from dunning.policy_document import policy_to_document
from dunning.triggers import Trigger, TriggerKind
from tests.dunning_helpers import account_of, case_of, deliver_now

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)
DEFAULT_LABEL = current_policy().version
V1_SOFT = [1, 3, 5, 8, 12, 17, 23]
V2_SOFT = [2, 6, 10]


@pytest.fixture(autouse=True)
def fresh_policy_cache():
    # Version numbers come back after each test's rollback; a process never sees that.
    policy_versions.forget_cache()
    yield
    policy_versions.forget_cache()


def client_with(*groups: str, name: str = "user", **flags) -> APIClient:
    user = User.objects.create_user(name, password="x", **flags)
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def admin_client() -> APIClient:
    return client_with("policy_admin", name="pat")


def v2_document(soft=V2_SOFT) -> dict:
    document = policy_to_document(current_policy())
    document["retries"]["schedules_days"]["soft"] = soft
    return document


def create(client: APIClient, document: dict, reason: str = "a gentler soft cadence"):
    return client.post("/api/v1/policies/", {"document": document, "reason": reason}, format="json")


def activate(client: APIClient, number: int, **body):
    return client.post(
        f"/api/v1/policies/{number}/activate/", {"reason": "go", **body}, format="json"
    )


# --- roles ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("groups", "flags", "read", "write"),
    [
        (("support_read",), {}, 200, 403),
        (("support_actions",), {}, 200, 403),
        (("policy_admin",), {}, 200, 201),
        ((), {"is_staff": True}, 403, 403),
        ((), {"is_superuser": True}, 200, 201),
    ],
)
def test_support_may_read_policies_and_only_policy_admin_may_change_them(
    groups, flags, read, write
):
    client = client_with(*groups, **flags)

    assert client.get("/api/v1/policies/").status_code == read
    assert create(client, v2_document()).status_code == write
    assert client.post("/api/v1/policies/validate/", {"document": v2_document()}, format="json")
    assert activate(client, 1).status_code == (200 if write == 201 else 403)


def test_anonymous_is_refused():
    assert APIClient().get("/api/v1/policies/").status_code in (401, 403)


# --- create, validate, diff ------------------------------------------------------------------
def test_the_first_read_stores_the_code_default_as_version_1_active(admin_client):
    body = admin_client.get("/api/v1/policies/").json()

    assert [(v["number"], v["label"], v["active"]) for v in body["results"]] == [
        (1, DEFAULT_LABEL, True)
    ]
    v1 = admin_client.get("/api/v1/policies/1/").json()
    assert v1["document"] == policy_to_document(current_policy())


def test_create_stores_an_inactive_version_and_answers_its_diff(admin_client):
    response = create(admin_client, v2_document())

    assert response.status_code == 201
    body = response.json()
    assert (body["number"], body["label"], body["active"], body["author"]) == (
        2,
        "v2",
        False,
        "pat",
    )
    assert body["diff_from_active"]["text"] == [
        f"retries.schedules_days.soft: {V1_SOFT} → {V2_SOFT}"
    ]
    assert SupportAction.objects.filter(action="policy_create", actor="pat").count() == 1
    diff = admin_client.get("/api/v1/policies/diff/?old=1&new=2").json()
    assert diff["changes"] == [
        {"path": "retries.schedules_days.soft", "old": V1_SOFT, "new": V2_SOFT}
    ]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"document": {**v2_document(), "severity": {}}, "reason": "x"}, "severity"),
        ({"document": v2_document(soft=[3, 1]), "reason": "x"}, "retries.schedules_days.soft"),
        ({"document": [], "reason": "x"}, "(document)"),
    ],
)
def test_a_bad_document_is_a_400_naming_the_path_and_writes_nothing(admin_client, body, path):
    admin_client.get("/api/v1/policies/")  # version 1 stored
    before = (PolicyVersion.objects.count(), SupportAction.objects.count())

    response = admin_client.post("/api/v1/policies/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_policy"
    assert path in [e["path"] for e in response.json()["errors"]]
    assert (PolicyVersion.objects.count(), SupportAction.objects.count()) == before
    validate = admin_client.post("/api/v1/policies/validate/", body, format="json")
    assert validate.status_code == 400


def test_a_missing_reason_or_unknown_version_is_refused(admin_client):
    assert (
        admin_client.post("/api/v1/policies/", {"document": {}}, format="json").status_code == 400
    )
    assert activate(admin_client, 9).status_code == 404
    assert admin_client.get("/api/v1/policies/diff/?old=1").status_code == 400


def test_validate_answers_the_diff_from_the_active_version_and_stores_nothing(admin_client):
    response = admin_client.post(
        "/api/v1/policies/validate/", {"document": v2_document()}, format="json"
    )

    assert response.status_code == 200
    assert (
        response.json()["diff_from_active"]["changes"][0]["path"] == "retries.schedules_days.soft"
    )
    assert list(PolicyVersion.objects.values_list("number", flat=True)) == [1]


# --- the store's guarantees ------------------------------------------------------------------
def test_a_version_is_immutable_and_only_one_is_active(admin_client):
    create(admin_client, v2_document())
    v2 = PolicyVersion.objects.get(number=2)

    with pytest.raises(ValueError, match="immutable"):
        v2.save()
    with pytest.raises(IntegrityError), transaction.atomic():
        PolicyVersion.objects.filter(number=2).update(active=True)


def test_activation_is_audited_and_switches_the_active_version(admin_client):
    create(admin_client, v2_document())

    response = activate(admin_client, 2, reason="paydays moved")

    assert response.status_code == 200
    assert (response.json()["active"], response.json()["previous"]) == (True, 1)
    assert list(PolicyVersion.objects.filter(active=True).values_list("number", flat=True)) == [2]
    audit = SupportAction.objects.get(action="policy_activate")
    assert (audit.actor, audit.account_id) == ("pat", None)
    assert audit.payload == {"reason": "paydays moved", "from": 1, "migrate_open_cases": False}
    assert audit.result == {"version": 2, "label": "v2", "migrated_cases": 0}
    assert policy_versions.active_policy().retries.schedules["soft"] == tuple(
        d * DAY for d in V2_SOFT
    )


# --- the engine: a case keeps its version ------------------------------------------------------
def fail(sender, customer_id: str) -> StripeCustomer:
    cus = StripeCustomer(id=customer_id, subscription=f"sub_{customer_id}")
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event(
            "charge.failed", f"ch_{customer_id}", decline_code="insufficient_funds"
        ),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    return cus


def retry_days(cus: StripeCustomer, start) -> list[float]:
    attempts = PaymentAttempt.objects.filter(
        account=account_of(cus), attempt_key__startswith="ch_sim_"
    ).order_by("attempted_at")
    return [round((a.attempted_at - start) / DAY, 2) for a in attempts]


def test_a_case_opened_under_v1_keeps_v1s_retries_and_a_new_case_gets_v2s(
    stripe_sender, test_clock, admin_client
):
    old = fail(stripe_sender, "cus_OldCase1")
    create(admin_client, v2_document())
    assert activate(admin_client, 2).json()["migrated_cases"] == 0
    new = fail(stripe_sender, "cus_NewCase2")

    clock_service.advance(seconds=int((30 * DAY).total_seconds()))

    assert retry_days(old, test_clock) == V1_SOFT
    assert retry_days(new, test_clock) == V2_SOFT
    assert (case_of(old).policy_version, case_of(new).policy_version) == (DEFAULT_LABEL, "v2")
    versions = set(
        Decision.objects.filter(case=case_of(old)).values_list("policy_version", flat=True)
    )
    assert versions == {DEFAULT_LABEL}
    assert set(
        Decision.objects.filter(case=case_of(new)).values_list("policy_version", flat=True)
    ) == {"v2"}


def test_an_activation_that_migrates_moves_open_cases_to_the_new_version(
    stripe_sender, test_clock, admin_client
):
    old = fail(stripe_sender, "cus_OldCase1")
    create(admin_client, v2_document())

    body = activate(admin_client, 2, migrate_open_cases=True).json()

    assert body["migrated_cases"] == 1
    case = case_of(old)
    assert (case.policy_version, case.next_review_at) == ("v2", clock.now())
    clock_service.advance(seconds=int((30 * DAY).total_seconds()))
    assert retry_days(old, test_clock) == V2_SOFT
    assert case_of(old).last_decision.policy_version == "v2"


def test_the_recompute_reads_the_active_version_in_the_same_statements(
    stripe_sender, test_clock, admin_client
):
    cus = fail(stripe_sender, "cus_Counted1")
    trigger = Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id=account_of(cus).pk, source="t")
    with CaptureQueriesContext(connection) as without_versions:
        handle(trigger)
    create(admin_client, v2_document())
    activate(admin_client, 2)

    with CaptureQueriesContext(connection) as first_after_activation:
        handle(trigger)
    with CaptureQueriesContext(connection) as with_versions:
        handle(trigger)

    # One query loads the versions, once per process after each activation.
    assert len(first_after_activation) == len(without_versions) + 1
    assert len(with_versions) == len(without_versions)


def test_a_case_on_a_version_with_other_history_windows_is_read_with_its_own(
    stripe_sender, test_clock, admin_client
):
    cus = fail(stripe_sender, "cus_Windows1")
    trigger = Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id=account_of(cus).pk, source="t")
    before = case_of(cus).last_decision_id
    with CaptureQueriesContext(connection) as one_read:
        handle(trigger)
    shorter = v2_document(soft=V1_SOFT)
    shorter["severity"]["memory_days"] = 90
    create(admin_client, shorter)
    activate(admin_client, 2)
    handle(trigger)  # loads the versions

    with CaptureQueriesContext(connection) as two_reads:
        handle(trigger)

    # Read with the active version's windows, then again with the case's own (version 1).
    reads = [q["sql"] for q in two_reads.captured_queries if "FOR UPDATE" in q["sql"]]
    assert len(reads) == 2
    assert len(two_reads) > len(one_read)
    assert case_of(cus).last_decision_id == before  # nothing changed: same decision
