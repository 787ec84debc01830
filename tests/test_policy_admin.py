"""The policy versions in the admin: read by support, created, diffed and activated by
`policy_admin` only, through the same services as the API."""

import json

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from dunning import policy_versions
from dunning.models import PolicyVersion, SupportAction
from dunning.policy import current_policy
from dunning.policy_document import policy_to_document

pytestmark = pytest.mark.django_db
LIST = "/admin/dunning/policyversion/"


@pytest.fixture(autouse=True)
def fresh_policy_cache():
    policy_versions.forget_cache()
    yield
    policy_versions.forget_cache()


def staff(*groups: str) -> Client:
    user = User.objects.create_user("staff_" + "_".join(groups), password="x", is_staff=True)
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    return client


def longer_grace() -> dict:
    document = policy_to_document(current_policy())
    document["severity"]["good_payer_factor"] = 3
    return document


def test_support_reads_the_versions_but_cannot_add_or_activate():
    client = staff("support_actions")

    assert client.get(LIST).status_code == 200
    v1 = PolicyVersion.objects.get(number=1)
    assert client.get(f"{LIST}{v1.pk}/change/").status_code == 200
    assert client.get(f"{LIST}add/").status_code == 403
    assert client.post(f"{LIST}1/activate/", {"reason": "x"}).status_code == 403


def test_policy_admin_creates_diffs_and_activates_a_version():
    client = staff("policy_admin")

    form = client.get(f"{LIST}add/")
    assert form.status_code == 200
    assert "good_payer_factor" in form.content.decode()  # starts from the active document
    created = client.post(
        f"{LIST}add/", {"document": json.dumps(longer_grace()), "reason": "loyal customers"}
    )
    assert created.status_code == 302
    assert PolicyVersion.objects.get(number=2).author == "staff_policy_admin"

    diff = client.get(f"{LIST}diff/?old=1&new=2").content.decode()
    assert "severity.good_payer_factor: 2.0 → 3" in diff

    page = client.get(f"{LIST}2/activate/")
    assert "severity.good_payer_factor" in page.content.decode()
    done = client.post(f"{LIST}2/activate/", {"reason": "loyal customers"})
    assert done.status_code == 302
    assert PolicyVersion.objects.get(active=True).number == 2
    assert SupportAction.objects.filter(action="policy_activate").count() == 1


def test_an_invalid_document_shows_its_paths_and_stores_nothing():
    client = staff("policy_admin")
    document = longer_grace()
    document["ladders"]["base"][2]["starts_after_days"] = 1

    response = client.post(f"{LIST}add/", {"document": json.dumps(document), "reason": "x"})

    assert response.status_code == 200
    assert "ladders.base[2].starts_after_days" in response.content.decode()
    assert PolicyVersion.objects.filter(number=2).count() == 0


def test_policy_admin_runs_a_version_in_shadow_from_the_admin():
    client = staff("policy_admin")
    client.post(f"{LIST}add/", {"document": json.dumps(longer_grace()), "reason": "loyal"})

    page = client.get(f"{LIST}2/candidate/")
    assert "severity.good_payer_factor" in page.content.decode()
    assert client.post(f"{LIST}2/candidate/", {"reason": "a week first"}).status_code == 302
    assert PolicyVersion.objects.get(candidate=True).number == 2
    assert staff("support_actions").post(f"{LIST}2/candidate/", {"reason": "x"}).status_code == 403
