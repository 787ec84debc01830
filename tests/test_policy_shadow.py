"""A candidate policy version in shadow: every recompute also computes it, records where it
would decide differently, applies nothing; the report shows the differences."""

import statistics
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dunning import policy_versions
from dunning.engine import handle
from dunning.models import PolicyShadowDecision, PolicyVersion, SupportAction
from dunning.triggers import Trigger, TriggerKind
from tests.dunning_helpers import account_of, case_of
from tests.test_policy_versions import V2_SOFT, activate, client_with, create, fail, v2_document

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)
CANDIDATE = "/api/v1/policies/candidate/"


@pytest.fixture(autouse=True)
def fresh_policy_cache():
    policy_versions.forget_cache()
    yield
    policy_versions.forget_cache()


@pytest.fixture
def admin_client():
    return client_with("policy_admin", name="pat")


def shadow(client, number):
    return client.put(CANDIDATE, {"number": number, "reason": "watch a week"}, format="json")


def recompute(cus):
    return handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id=account_of(cus).pk, source="t"))


def test_the_candidate_is_computed_next_to_the_active_version_and_nothing_of_it_applied(
    stripe_sender, test_clock, admin_client
):
    create(admin_client, v2_document())
    assert shadow(admin_client, 2).json() == {"candidate": 2}

    cus = fail(stripe_sender, "cus_Shadowed1")

    case = case_of(cus)
    assert (case.policy_version, case.next_retry_at) == (
        policy_versions.ensure_initial_version().label,
        test_clock + DAY,
    )
    [row] = PolicyShadowDecision.objects.filter(account=account_of(cus), candidate=2)
    retry = next(d for d in row.differences if d["field"] == "next_retry_at")
    assert (retry["decided"], retry["candidate"]) == (
        (test_clock + DAY).isoformat(),
        (test_clock + V2_SOFT[0] * DAY).isoformat(),
    )
    report = admin_client.get(CANDIDATE).json()
    assert report["candidate"] == 2
    assert [d["account_id"] for d in report["differences"]] == [account_of(cus).pk]
    assert "retry 1 of 3" in report["differences"][0]["candidate"]

    # The same difference seen again is not written again.
    recompute(cus)
    assert PolicyShadowDecision.objects.filter(account=account_of(cus)).count() == 1


def test_a_candidate_that_agrees_costs_no_statement_and_writes_nothing(
    stripe_sender, test_clock, admin_client
):
    cus = fail(stripe_sender, "cus_Agrees1")
    with CaptureQueriesContext(connection) as without:
        recompute(cus)
    same = v2_document(soft=[1, 3, 5, 8, 12, 17, 23])
    same["decline_classes"]["approve_with_id"] = "hard"  # a code this customer never had
    create(admin_client, same)
    shadow(admin_client, 2)
    recompute(cus)  # loads the versions once

    with CaptureQueriesContext(connection) as with_candidate:
        recompute(cus)

    assert len(with_candidate) == len(without)
    assert not PolicyShadowDecision.objects.exists()


def test_only_policy_admin_chooses_the_candidate_and_never_the_active_version(admin_client):
    create(admin_client, v2_document())
    agent = client_with("support_actions", name="alice")

    assert shadow(agent, 2).status_code == 403
    assert agent.get(CANDIDATE).status_code == 200
    assert shadow(admin_client, 1).status_code == 400
    assert shadow(admin_client, 9).status_code == 404
    assert shadow(admin_client, 2).status_code == 200
    assert SupportAction.objects.get(action="policy_candidate").result == {"candidate": 2}
    assert shadow(admin_client, None).json() == {"candidate": None}
    assert not PolicyVersion.objects.filter(candidate=True).exists()


def test_activating_the_candidate_ends_its_shadow(admin_client):
    create(admin_client, v2_document())
    shadow(admin_client, 2)

    activate(admin_client, 2)

    assert admin_client.get(CANDIDATE).json()["candidate"] is None


def test_the_cost_of_a_shadow_candidate_on_the_recompute(stripe_sender, test_clock, admin_client):
    """Measured, not asserted: run with -s to print it (the README's figure)."""
    cus = fail(stripe_sender, "cus_Costly1")
    create(admin_client, v2_document())
    wall, cpu = {"without": [], "with": []}, {"without": [], "with": []}
    for _ in range(5):
        for kind in ("without", "with"):
            shadow(admin_client, 2 if kind == "with" else None)
            recompute(cus)  # warm
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(40):
                recompute(cus)
            wall[kind].append((time.perf_counter() - start) / 40)
            cpu[kind].append((time.process_time() - start_cpu) / 40)
    for name, spans in (("wall", wall), ("CPU of this process", cpu)):
        without, with_ = (statistics.median(spans[k]) * 1000 for k in ("without", "with"))
        print(
            f"\nrecompute of an account in dunning, {name}: {without:.2f} ms without a "
            f"candidate, {with_:.2f} ms with one that differs ({with_ / without:.2f}x, "
            "median of 5 rounds of 40)"
        )
