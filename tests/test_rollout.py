"""Staged rollout of enforcement, shadow mode, the audited switch and the kill switch."""

import pytest
from django.contrib.auth.models import Group, User

from billing_events.scenarios import StripeCustomer
from dunning import rollout
from dunning import test_clock as clock_service
from dunning.drift import scan
from dunning.engine import handle
from dunning.models import OutcomeEvent, ShadowDecision, SupportAction
from dunning.triggers import Trigger, TriggerKind
from entitlements.models import Restriction
from tests.dunning_helpers import account_of, case_of, deliver_now

pytestmark = pytest.mark.django_db


def failing(sender, cus):
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )


def test_the_hash_is_stable_and_stages_only_ever_add_accounts():
    customers = [f"cus_{n:06d}" for n in range(2000)]
    gate = {
        stage: {
            c
            for c in customers
            if rollout.in_gate(stripe_customer_id=c, stage=stage, kill_switch=False, allowlist=[])
        }
        for stage in ("off", "5", "10", "25", "50", "100")
    }
    assert gate["off"] == set() and gate["100"] == set(customers)
    assert gate["5"] <= gate["10"] <= gate["25"] <= gate["50"] <= gate["100"]
    assert 60 <= len(gate["5"]) <= 140  # about 5 percent of 2,000
    assert rollout.bucket("cus_QXg1o8vcGmoR32") == rollout.bucket("cus_QXg1o8vcGmoR32")


def test_allowlist_is_enforced_at_every_stage_and_the_kill_switch_beats_it():
    assert rollout.in_gate(
        stripe_customer_id="cus_vip", stage="accounts", kill_switch=False, allowlist=["cus_vip"]
    )
    assert not rollout.in_gate(
        stripe_customer_id="cus_other", stage="accounts", kill_switch=False, allowlist=["cus_vip"]
    )
    assert not rollout.in_gate(
        stripe_customer_id="cus_vip", stage="100", kill_switch=True, allowlist=["cus_vip"]
    )


def test_outside_the_gate_the_decision_is_recorded_in_shadow_and_not_applied(
    stripe_sender, test_clock
):
    rollout.set_gate(
        stage="off", kill_switch=False, allowlist=[], actor="ops", reason="start in shadow"
    )
    cus = StripeCustomer()
    failing(stripe_sender, cus)

    clock_service.advance(seconds=15 * 86400)

    case = case_of(cus)
    assert case.level == "read_only"  # the decision is made and shown...
    assert Restriction.objects.count() == 0  # ...but not applied
    assert case.shadow == {
        "restrictions": ["premium_features", "write_access"],
        "standing": "restricted",
        "cancel": [],
    }
    shadows = list(ShadowDecision.objects.order_by("at").values_list("level", flat=True))
    assert shadows == ["premium_restricted", "read_only"]
    assert OutcomeEvent.objects.order_by("-sequence").first().payload["enforced"] is False
    assert "shadow mode (rollout stage off)" in case.last_decision.summary


def test_raising_the_stage_applies_on_the_next_recompute_and_the_kill_switch_lifts(
    stripe_sender, test_clock
):
    rollout.set_gate(stage="off", kill_switch=False, allowlist=[], actor="ops", reason="shadow")
    cus = StripeCustomer()
    failing(stripe_sender, cus)
    clock_service.advance(seconds=7.5 * 86400)  # no payment activity for 2.5 days
    assert Restriction.objects.count() == 0

    rollout.set_gate(
        stage="accounts", kill_switch=False, allowlist=[cus.id], actor="ops", reason="pilot"
    )
    scan()
    assert set(Restriction.objects.values_list("code", flat=True)) == {"premium_features"}
    assert case_of(cus).shadow == {}

    rollout.set_gate(
        stage="100", kill_switch=True, allowlist=[cus.id], actor="ops", reason="incident"
    )
    scan()
    assert Restriction.objects.count() == 0


def test_a_fresh_install_starts_in_shadow_for_everyone():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DUNNING_ROLLOUT_DEFAULT_STAGE"}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from config import settings; print(settings.DUNNING_ROLLOUT_DEFAULT_STAGE)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "off"


@pytest.mark.parametrize(("configured", "stage"), [("off", "off"), ("25", "25"), ("typo", "off")])
def test_the_default_stage_before_anyone_set_one(settings, configured, stage):
    settings.DUNNING_ROLLOUT_DEFAULT_STAGE = configured
    assert rollout.default_stage() == stage


def test_fresh_install_api_says_shadow_and_enforcing_is_an_explicit_step(
    api_client, settings, stripe_sender, test_clock
):
    settings.DUNNING_ROLLOUT_DEFAULT_STAGE = "off"  # what config.settings gives a fresh install
    user = User.objects.get(username="support")
    user.groups.add(
        Group.objects.get(name="support_read"), Group.objects.get(name="support_actions")
    )
    body = api_client.get("/api/v1/rollout/").json()
    assert (body["stage"], body["kill_switch"]) == ("off", False)

    cus = StripeCustomer()
    failing(stripe_sender, cus)
    clock_service.advance(seconds=8 * 86400)
    assert Restriction.objects.count() == 0 and case_of(cus).shadow

    api_client.put("/api/v1/rollout/", {"stage": "100", "reason": "go"}, format="json")
    handle(Trigger(TriggerKind.NINJAPANEL_BUTTON, account_of(cus).pk, source="support:ops"))
    assert Restriction.objects.exists()


def test_rollout_api_is_audited_and_validated(api_client, test_clock):
    user = User.objects.get(username="support")
    assert api_client.get("/api/v1/rollout/").status_code == 403
    user.groups.add(Group.objects.get(name="support_read"))
    # The suite's settings enforce by default (config.test_settings); production is "off".
    assert api_client.get("/api/v1/rollout/").json()["stage"] == "100"
    assert (
        api_client.put(
            "/api/v1/rollout/", {"stage": "5", "reason": "go"}, format="json"
        ).status_code
        == 403
    )

    user.groups.add(Group.objects.get(name="support_actions"))
    bad = api_client.put(
        "/api/v1/rollout/", {"stage": "7", "allowlist": ["not-a-customer"]}, format="json"
    )
    assert bad.status_code == 400 and {"stage", "allowlist", "reason"} <= set(bad.json())

    good = api_client.put(
        "/api/v1/rollout/",
        {"stage": "5", "allowlist": ["cus_a"], "reason": "week 1"},
        format="json",
    )
    assert good.status_code == 200
    assert (good.json()["stage"], good.json()["updated_by"]) == ("5", "support")
    audit = SupportAction.objects.get(action="rollout")
    assert audit.payload == {
        "reason": "week 1",
        "from": {"stage": "100", "kill_switch": False, "allowlist": []},
    }


def test_shadow_report_lists_what_would_have_been_applied(
    support_reader, stripe_sender, test_clock
):
    rollout.set_gate(stage="off", kill_switch=False, allowlist=[], actor="ops", reason="shadow")
    cus = StripeCustomer()
    failing(stripe_sender, cus)
    clock_service.advance(seconds=8 * 86400)

    body = support_reader.get("/api/v1/rollout/shadow-decisions/?days=30").json()

    [decision] = body["decisions"]
    assert (decision["stripe_customer_id"], decision["level"]) == (cus.id, "premium_restricted")
    assert decision["account_id"] == account_of(cus).pk
    assert decision["would_apply"]["restrictions"] == ["premium_features"]
