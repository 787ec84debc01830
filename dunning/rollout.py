"""Staged rollout of enforcement: who dunning's consequences are applied to.

Stages: `off` (shadow for everyone), `accounts` (only the allowlist), then 5, 10, 25, 50
and 100 percent of accounts by a stable hash of the Stripe customer id (the same account
stays in as the stage goes up). The allowlist is enforced at every stage; the kill switch
enforces nothing. Outside the gate the engine records what it would apply (shadow mode).
"""

import hashlib
from datetime import datetime

from django.conf import settings
from django.db import transaction

from core import clock
from dunning.models import (
    CustomerNotice,
    RolloutGate,
    RolloutStage,
    ShadowDecision,
    SupportAction,
)

PERCENT = {"off": 0, "accounts": 0, "5": 5, "10": 10, "25": 25, "50": 50, "100": 100}


def bucket(stripe_customer_id: str) -> int:
    """0-99, stable across processes, machines and releases."""
    digest = hashlib.sha256(f"dunning-rollout:{stripe_customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) % 100


def in_gate(*, stripe_customer_id: str, stage: str, kill_switch: bool, allowlist: list) -> bool:
    if kill_switch:
        return False
    if stripe_customer_id in allowlist:
        return True
    return bucket(stripe_customer_id) < PERCENT[stage]


def default_stage() -> str:
    """The stage before anyone set one: shadow (`off`) unless configured otherwise. An
    unknown configured value also means shadow: a typo must never enforce."""
    stage = settings.DUNNING_ROLLOUT_DEFAULT_STAGE
    return stage if stage in RolloutStage.values else RolloutStage.OFF


def current_gate() -> RolloutGate:
    gate = RolloutGate.objects.filter(pk=RolloutGate.SINGLETON).first()
    if gate is None:
        gate = RolloutGate(
            pk=RolloutGate.SINGLETON,
            stage=default_stage(),
            updated_at=clock.now(),
            updated_by="default (DUNNING_ROLLOUT_DEFAULT_STAGE)",
        )
    return gate


def set_gate(
    *, stage: str, kill_switch: bool, allowlist: list[str], actor: str, reason: str
) -> RolloutGate:
    """The audited switch. Accounts leaving the gate are lifted by their next recompute
    (the drift detector finds them: their restrictions no longer match)."""
    if stage not in RolloutStage.values:
        raise ValueError(f"unknown stage {stage!r}")
    with transaction.atomic():
        before = current_gate()
        previous = {
            "stage": before.stage,
            "kill_switch": before.kill_switch,
            "allowlist": before.allowlist,
        }
        gate, _ = RolloutGate.objects.update_or_create(
            pk=RolloutGate.SINGLETON,
            defaults={
                "stage": stage,
                "kill_switch": kill_switch,
                "allowlist": sorted(set(allowlist)),
                "updated_at": clock.now(),
                "updated_by": actor,
            },
        )
        SupportAction.objects.create(
            account=None,
            actor=actor,
            action="rollout",
            payload={"reason": reason, "from": previous},
            result={"stage": stage, "kill_switch": kill_switch, "allowlist": gate.allowlist},
            at=gate.updated_at,
        )
    return gate


def shadow_report(*, since: datetime, limit: int = 500) -> list[dict]:
    """Shadow decisions to review for false positives before a stage goes up."""
    rows = (
        ShadowDecision.objects.filter(at__gte=since)
        .select_related("account")
        .order_by("-at")[:limit]
    )
    return [
        {
            "account_id": row.account_id,
            "stripe_customer_id": row.account.stripe_customer_id,
            "case_id": row.case_id,
            "at": row.at,
            "stage": row.stage,
            "level": row.level,
            "would_apply": row.would_apply,
            "summary": row.summary,
        }
        for row in rows
    ]


def would_send(*, since: datetime, limit: int = 500) -> list[dict]:
    """Customer notices planned in shadow mode ("would send"), newest due first: what the
    customers outside the gate would have been told, to review with the decisions. `due_at`
    is when it would have gone; a later one is still to come, and goes for real if the
    account enters the gate before then."""
    rows = (
        CustomerNotice.objects.filter(status=CustomerNotice.Status.SHADOW, due_at__gte=since)
        .select_related("account")
        .order_by("-due_at", "-pk")[:limit]
    )
    return [
        {
            "account_id": row.account_id,
            "stripe_customer_id": row.account.stripe_customer_id,
            "case_id": row.case_id,
            "kind": row.kind,
            "key": row.key,
            "due_at": row.due_at,
        }
        for row in rows
    ]
