"""The case's row in a diff's application: opened, or moved through its FSM transitions."""

from datetime import datetime

from billing_events.models import Account
from core.row_sql import RowInsert, RowUpdate
from dunning.compute import Desired
from dunning.diff import CASE_FIELDS
from dunning.models import CaseInvoice, CaseState, CaseTransition, Decision, DunningCase
from dunning.policy import Policy
from dunning.snapshot import Snapshot
from dunning.triggers import Trigger

TRANSITION_METHOD = {
    CaseState.RETRYING: "retry",
    CaseState.AWAITING_CUSTOMER: "await_customer",
    CaseState.ESCALATED: "escalate",
    CaseState.LIFTING: "lift",
    CaseState.RESOLVED: "resolve",
}
TRANSITION_INSERT = RowInsert("dunning_transition_insert", CaseTransition)
CASE_UPDATE = RowUpdate(
    "dunning_case_update", DunningCase, where="id = %(case)s", where_types={"case": "bigint"}
)
# Every diffed case field but the state, which changes only through its transitions.
CASE_VALUE_FIELDS = tuple(name for name in CASE_FIELDS if name != "state")


def apply_case(
    account: Account,
    snapshot: Snapshot,
    desired: Desired,
    decision: Decision,
    trigger: Trigger,
    now: datetime,
    policy: Policy,
) -> DunningCase:
    target = desired.case
    values = {name: getattr(target, name) for name in CASE_VALUE_FIELDS}
    if target.case_pk is None:
        case = DunningCase.objects.create(
            account=account,
            state=target.state,
            opened_at=now,
            resolved_at=now if target.state == CaseState.RESOLVED else None,
            policy_version=policy.version,
            last_decision=decision,
            **values,
        )
        _record_transition(case, decision, "", target.state, trigger, now)
    else:
        # The snapshot read the case under this transaction's account lock: its state is
        # the row's, so the case is written without reading it again. Only the fields the
        # engine decides are written; support's holds are not the engine's to touch.
        case = DunningCase(pk=target.case_pk, account=account, state=snapshot.case.state)
        written = {**values, "policy_version": policy.version, "last_decision_id": decision.pk}
        if case.state != target.state:
            before = case.state
            getattr(case, TRANSITION_METHOD[target.state])()  # refused if not allowed
            _record_transition(case, decision, before, target.state, trigger, now)
            written["state"] = case.state
            if target.state == CaseState.RESOLVED:
                written["resolved_at"] = now
        for name, value in written.items():
            if name != "state":  # set by its transition (a protected field)
                setattr(case, name, value)
        CASE_UPDATE.send(written, case=case.pk)
    linked = {i.pk for i in snapshot.invoices if i.case_id == case.pk}
    CaseInvoice.objects.bulk_create(
        [CaseInvoice(case=case, invoice_id=pk) for pk in sorted(target.invoice_pks - linked)]
    )
    return case


def _record_transition(
    case: DunningCase, decision: Decision, before: str, after: str, trigger: Trigger, now: datetime
) -> None:
    TRANSITION_INSERT.send(
        CaseTransition(
            case=case,
            decision=decision,
            from_state=before,
            to_state=after,
            trigger=trigger.kind,
            actor=trigger.source,
            at=now,
        )
    )
