"""Policy changes against concurrent work: two activations at once, an activation that
migrates open cases while the engine recomputes one of them, a candidate that looks back
further than the active version, and a document with NaN in it."""

import dataclasses
import json
import math
import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.db import connections

from billing_events.models import Account
from billing_events.scenarios import StripeCustomer
from dunning import engine, policy_versions
from dunning.models import PolicyVersion
from dunning.policy import current_policy
from dunning.policy_document import policy_to_document, validate_document
from dunning.triggers import Trigger, TriggerKind
from tests.dunning_helpers import account_of, case_of, deliver_now


@pytest.fixture(autouse=True)
def fresh_policy_cache():
    policy_versions.forget_cache()
    yield
    policy_versions.forget_cache()


def document(**changes) -> dict:
    doc = json.loads(json.dumps(policy_to_document(current_policy())))
    for path, value in changes.items():
        section, key = path.split("__")
        doc[section][key] = value
    return doc


def in_thread(work) -> threading.Thread:
    def run():
        try:
            work()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_two_activations_at_once_both_land_one_after_the_other():
    first = policy_versions.create_version(document=document(), author="t", reason="a").number
    second = policy_versions.create_version(document=document(), author="t", reason="b").number
    for _ in range(5):
        errors, barrier = [], threading.Barrier(2)

        def activate(number, errors=errors, barrier=barrier):
            barrier.wait()
            try:
                policy_versions.activate(number=number, actor="t", reason="race")
            except Exception as error:  # noqa: BLE001 - the assertion names it
                errors.append(repr(error))

        threads = [in_thread(lambda n=n: activate(n)) for n in (first, second)]
        for thread in threads:
            thread.join(20)
        assert errors == []
        assert PolicyVersion.objects.filter(active=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_migrating_activation_is_not_undone_by_a_recompute_in_flight(stripe_sender, test_clock):
    cus = StripeCustomer(id="cus_Race1", subscription="sub_cus_Race1")
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_Race1", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    v2 = policy_versions.create_version(
        document=document(retries__schedules_days={**document()["retries"]["schedules_days"]}),
        author="t",
        reason="v2",
    )
    real_compute, racing = engine.compute, {}

    def compute_while_activating(snapshot, now, policy):
        # The activation starts while this recompute holds the account and has read v1.
        racing["thread"] = in_thread(
            lambda: racing.setdefault(
                "activation",
                policy_versions.activate(
                    number=v2.number, actor="t", reason="go", migrate_open_cases=True
                ),
            )
        )
        racing["thread"].join(1)
        desired = real_compute(snapshot, now, policy)
        later = desired.case.next_review_at + timedelta(minutes=1)  # a change to save
        return dataclasses.replace(
            desired, case=dataclasses.replace(desired.case, next_review_at=later)
        )

    with mock.patch.object(engine, "compute", compute_while_activating):
        engine.handle(Trigger(TriggerKind.DRIFT_DETECTED, account_of(cus).pk, source="t"))
    racing["thread"].join(20)

    assert racing["activation"].migrated_cases == 1
    assert case_of(cus).policy_version == v2.label


@pytest.mark.django_db
def test_a_candidate_that_looks_back_further_is_judged_on_the_history_it_would_read():
    longer = document(severity__memory_days=3000, retries__card_attempt_window_days=3000)
    candidate = policy_versions.create_version(document=longer, author="t", reason="longer")
    policy_versions.set_candidate(number=candidate.number, actor="t", reason="shadow")
    account = Account.objects.create(stripe_customer_id="cus_Shadow1")
    windows, real_read = [], engine.lock_and_read

    def spy(**kwargs):
        windows.append((kwargs["memory"].days, kwargs["card_window"].days))
        return real_read(**kwargs)

    with mock.patch.object(engine, "lock_and_read", spy):
        engine.handle(Trigger(TriggerKind.DRIFT_DETECTED, account.pk, source="t"))
        engine.handle(Trigger(TriggerKind.DRIFT_DETECTED, account.pk, source="t"))

    assert (3000, 3000) in windows


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_is_refused_with_its_path(value):
    doc = document()
    doc["notices"]["step_lead_days"] = value
    errors = validate_document(doc)
    assert [(e.path, e.message) for e in errors] == [
        ("notices.step_lead_days", "must be a finite number")
    ]


@pytest.mark.django_db
def test_the_admin_refuses_nan_and_bad_diff_numbers_without_a_500(client):
    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    text = json.dumps(document()).replace('"step_lead_days": 3', '"step_lead_days": NaN')
    assert "NaN" in text
    before = PolicyVersion.objects.count()

    added = client.post("/admin/dunning/policyversion/add/", {"document": text, "reason": "x"})
    diffed = client.get("/admin/dunning/policyversion/diff/?old=abc&new=1")

    assert added.status_code == 200  # the form again, with the error
    assert PolicyVersion.objects.filter(document__isnull=False).count() <= max(before, 1)
    assert diffed.status_code == 400
