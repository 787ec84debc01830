"""The snapshot's rows turned into the engine's view: what `snapshot_sql` (one account)
and `snapshot_batch` (many) read becomes a Snapshot here, through `assemble`, the one place
both do it. Rows are read by column name, never by position.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from types import ModuleType
from typing import get_args, get_origin

from dunning import rollout
from dunning.snapshot import (
    DEFAULT_STANDING,
    AttemptView,
    CaseView,
    InvoiceView,
    NoticeView,
    Snapshot,
    aware,
)

# The effect module of each outbox kind (`dunning.effects.registry.REGISTRY`), handed over
# when the app starts (`dunning.apps`): the effects read the snapshot, so importing them
# from here would close an import circle through the engine.
_EFFECTS: Mapping[str, ModuleType] = {}


def fold_effects_with(registry: Mapping[str, ModuleType]) -> None:
    """Use `registry` to read each outbox kind's rows into the snapshot."""
    global _EFFECTS
    _EFFECTS = registry


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _named(cursor) -> list[dict]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# How each case column is read, from CaseView's own types.
CASE_TIMES = tuple(f.name for f in fields(CaseView) if datetime in get_args(f.type))
CASE_JSON = tuple(f.name for f in fields(CaseView) if get_origin(f.type) is dict or f.type is dict)


def _case(row: dict) -> CaseView:
    for name in CASE_TIMES:
        row[name] = aware(row[name])
    for name in CASE_JSON:
        row[name] = _json(row[name])
    return CaseView(**row)


def _invoice(row: dict) -> InvoiceView:
    row["payment_failed_at"] = aware(row["payment_failed_at"])
    # Both read as columns: SQLite types a column, not an expression over it.
    row["opened_at"] = aware(row.pop("finalized_at") or row.pop("stripe_created", None))
    row.pop("stripe_created", None)
    row["updated_at"] = aware(row["updated_at"])
    row["paid_out_of_band"] = bool(row["paid_out_of_band"])
    return InvoiceView(**row)


def _attempt(row: dict) -> AttemptView:
    row["attempted_at"] = aware(row["attempted_at"])
    row["customer_initiated"] = bool(row["customer_initiated"])
    return AttemptView(**row)


@dataclass
class AccountRows:
    """What the statements return for one account, before it becomes a Snapshot: the one
    place both readers (this one and `snapshot_batch`) turn rows into the engine's view."""

    head: dict  # the ACCOUNT row
    case: CaseView | None = None
    invoices: list[InvoiceView] = field(default_factory=list)
    attempts: list[AttemptView] = field(default_factory=list)
    # Rows by column name, as `_named` reads them (snapshot_sql's *_COLUMNS).
    pending: list[dict] = field(default_factory=list)
    ended: list[dict] = field(default_factory=list)
    card_history: list[AttemptView] = field(default_factory=list)
    subscriptions: list[dict] = field(default_factory=list)
    restrictions: list[dict] = field(default_factory=list)
    notices: list[dict] = field(default_factory=list)


def ended_since(case: CaseView | None, now: datetime, lookup_window: timedelta) -> datetime:
    """How far back ended side effects still count: the look-up window, or the case's
    whole life when it is longer."""
    since = now - lookup_window
    if case is not None and case.opened_at is not None:
        since = min(since, case.opened_at)
    return since


def assemble(account_id: int, rows: AccountRows, *, now: datetime, memory: timedelta) -> Snapshot:
    """The snapshot from the rows the statements returned."""
    head, case = rows.head, rows.case
    pending = _pending_effects(rows.pending, now)
    ended = _ended_effects(rows.ended)
    subscription_status, items_before_upgrade = {}, {}
    for row in rows.subscriptions:
        subscription_id = row["stripe_subscription_id"]
        subscription_status[subscription_id] = row["status"]
        if items := _json(row["items_before_upgrade"]):
            items_before_upgrade[subscription_id] = tuple(
                (item["price"], item.get("quantity", 1)) for item in items
            )
    notices = {
        row["key"]: NoticeView(
            row["key"], row["kind"], row["status"], aware(row["due_at"]), aware(row["claimed_at"])
        )
        for row in rows.notices
    }

    cases = head["cases"]
    earlier_cases = cases - (1 if case is not None and case.opened_at > now - memory else 0)
    stage = head["stage"] or rollout.default_stage()
    allowlist = head["allowlist"]
    return Snapshot(
        account_id=account_id,
        invoices=tuple(rows.invoices),
        attempts=tuple(rows.attempts),
        subscription_status=subscription_status,
        case=case,
        restrictions={row["code"]: row["level"] for row in rows.restrictions},
        standing_requested=head["requested"] or DEFAULT_STANDING,
        standing_acknowledged=head["acknowledged"] or DEFAULT_STANDING,
        payment_method_updated_at=aware(head["payment_method_updated_at"]),
        default_payment_method=head["default_payment_method"],
        card_history=tuple(rows.card_history),
        paid_invoices=head["paid"],
        recent_cases=earlier_cases,
        bad_debt=head["episode"],
        items_before_upgrade=items_before_upgrade,
        notices=notices,
        card_expiring_at=aware(head["card_expiring_at"]),
        enforced=rollout.in_gate(
            stripe_customer_id=head["stripe_customer_id"],
            stage=stage,
            kill_switch=bool(head["kill_switch"]),
            allowlist=_json(allowlist) if allowlist else [],
        ),
        rollout_stage=stage,
        policy_active=head["policy_active"],
        policy_candidate=head["policy_candidate"],
        lookups_asked={**pending.pop("lookups"), **ended["lookups"]},
        lookups_ended=frozenset(ended.pop("lookups")),
        **pending,
        **ended,
    )


def _pending_effects(rows: list[dict], now: datetime) -> dict:
    """Each pending item folded in by its own kind's effect module (`fold_pending`)."""
    folded = {
        "scheduled_retry": None,
        "side_effects_in_flight": 0,
        "cancel_requested": set(),
        "revert_requested": set(),
        "lookups": {},
    }
    for row in rows:
        claimed_until = row["claimed_until"]
        running = claimed_until is not None and aware(claimed_until) > now
        effect = _EFFECTS[row["kind"]]
        folded["side_effects_in_flight"] += effect.fold_pending(
            row, _json(row["payload"]), running, folded
        )
    folded["cancel_requested"] = frozenset(folded["cancel_requested"])
    folded["revert_requested"] = frozenset(folded["revert_requested"])
    return folded


def _ended_effects(rows: list[dict]) -> dict:
    """Each ended item folded in by its own kind's effect module (`fold_ended`)."""
    folded = {
        "cancel_refused": {},
        "revert_refused": {},
        "reverted_invoices": set(),
        "lookups": {},
        "reverts_done": set(),
    }
    for row in rows:
        _EFFECTS[row["kind"]].fold_ended(row, _json(row["payload"]), folded)
    folded["reverted_invoices"] = frozenset(folded["reverted_invoices"])
    folded["reverts_done"] = frozenset(folded["reverts_done"])
    return folded
