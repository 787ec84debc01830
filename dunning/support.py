"""Support's actions on an account: each one audited, each one through the engine.

Views and admin actions call these with ids and the acting user's name; nothing here
changes dunning state except by asking the engine to recompute.
"""

from datetime import datetime

from django.db import transaction

from core import clock
from core.locks import lock_account
from dunning.diff import Outcome
from dunning.engine import handle
from dunning.models import OPEN_STATES, DunningCase, SupportAction
from dunning.triggers import Trigger, TriggerKind


class NoOpenCase(ValueError):
    """The action needs an open dunning case and the account has none."""


def _audit(*, account_id: int, actor: str, action: str, payload: dict, outcome: Outcome) -> None:
    SupportAction.objects.create(
        account_id=account_id,
        actor=actor,
        action=action,
        payload=payload,
        result={
            "decision_id": outcome.decision_id,
            "changes": [change.as_dict() for change in outcome.changes],
        },
        at=clock.now(),
    )


def recompute(*, account_id: int, actor: str) -> Outcome:
    """The NinjaPanel button: a full recompute; returns the diff it applied (maybe empty)."""
    outcome = handle(
        Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id=account_id, source=f"support:{actor}")
    )
    _audit(account_id=account_id, actor=actor, action="recompute", payload={}, outcome=outcome)
    return outcome


def _set_hold(*, account_id: int, actor: str, action: str, fields: dict) -> Outcome:
    with transaction.atomic():
        lock_account(account_id)
        updated = DunningCase.objects.filter(account_id=account_id, state__in=OPEN_STATES).update(
            **fields
        )
        if not updated:
            raise NoOpenCase("the account has no open dunning case")
        outcome = handle(
            Trigger(TriggerKind.NINJAPANEL_BUTTON, account_id=account_id, source=f"support:{actor}")
        )
        payload = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
        _audit(account_id=account_id, actor=actor, action=action, payload=payload, outcome=outcome)
    return outcome


def pause_dunning(*, account_id: int, until: datetime, reason: str, actor: str) -> Outcome:
    """No retries and no escalation until `until` (e.g. the customer promised to pay)."""
    return _set_hold(
        account_id=account_id,
        actor=actor,
        action="pause_dunning",
        fields={"paused_until": until, "pause_reason": reason},
    )


def extend_grace(*, account_id: int, until: datetime, reason: str, actor: str) -> Outcome:
    """No escalation until `until`; retries go on."""
    return _set_hold(
        account_id=account_id,
        actor=actor,
        action="extend_grace",
        fields={"grace_until": until, "grace_reason": reason},
    )
