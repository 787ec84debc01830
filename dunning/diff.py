"""The diff between what the stores hold and what `compute` wants: the minimal changes
one recompute applies (`dunning.apply`), and what a recompute did (`Outcome`). Pure."""

from dataclasses import dataclass, field
from datetime import datetime

from dunning.compute import Desired
from dunning.notifications.plan import SETTLED_KINDS
from dunning.snapshot import DECIDED_CASE_FIELDS, Snapshot


@dataclass(frozen=True)
class Change:
    store: str  # case, case_invoices, restrictions, standing
    field: str
    before: object
    after: object

    def as_dict(self) -> dict:
        return {
            "store": self.store,
            "field": self.field,
            "from": _jsonable(self.before),
            "to": _jsonable(self.after),
        }


@dataclass(frozen=True)
class Outcome:
    """What one recompute did; empty `changes` means it wrote nothing."""

    account_id: int
    changes: tuple[Change, ...] = ()
    decision_id: int | None = None
    summary: str = ""
    outbox_ids: tuple[int, ...] = field(default=())


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value


CASE_FIELDS = DECIDED_CASE_FIELDS  # declared once, on snapshot.CaseView


def diff(snapshot: Snapshot, desired: Desired, now: datetime | None = None) -> tuple[Change, ...]:
    changes: list[Change] = []
    current = snapshot.case
    if desired.case is not None and (current is None or desired.case.case_pk != current.pk):
        current = None  # a new case
    if desired.case is not None:
        for name in CASE_FIELDS:
            before = getattr(current, name) if current else None
            after = getattr(desired.case, name)
            if before != after:
                changes.append(Change("case", name, before, after))
        linked = {i.pk for i in snapshot.invoices if current and i.case_id == current.pk}
        joining = desired.case.invoice_pks - linked
        if joining:
            changes.append(
                Change("case_invoices", "invoices", sorted(linked), sorted(joining | linked))
            )
    scheduled = snapshot.scheduled_retry
    before = (
        (scheduled.stripe_invoice_id, scheduled.attempt_number, scheduled.at) if scheduled else None
    )
    plan = desired.case.retry if desired.case is not None else None
    after = (plan.stripe_invoice_id, plan.attempt_number, plan.at) if plan else None
    if before != after and not (scheduled and scheduled.running):
        changes.append(Change("retry", "scheduled", before, after))
    bad_debt = desired.case.bad_debt if desired.case is not None else None
    # Entering and leaving bad debt are the changes; the entry reason stays as it was.
    if (bad_debt is None) != (snapshot.bad_debt is None):
        changes.append(Change("bad_debt", "episode", snapshot.bad_debt, bad_debt))
    cancel = desired.case.cancel_subscriptions if desired.case is not None else frozenset()
    cancelled = {s for s, status in snapshot.subscription_status.items() if status == "canceled"}
    to_cancel = cancel - snapshot.cancel_requested - cancelled
    if to_cancel:
        changes.append(
            Change("subscriptions", "cancel", sorted(snapshot.cancel_requested), sorted(to_cancel))
        )
    lookups = desired.case.lookups if desired.case is not None else frozenset()
    if lookups - set(snapshot.lookups_asked):
        changes.append(
            Change("lookups", "requested", [], sorted(lookups - set(snapshot.lookups_asked)))
        )
    revert = desired.case.revert_upgrades if desired.case is not None else frozenset()
    to_revert = revert - snapshot.revert_requested - snapshot.reverts_done
    if to_revert:
        changes.append(
            Change("upgrades", "revert", sorted(snapshot.revert_requested), sorted(to_revert))
        )
    notices = notice_changes(snapshot, desired, now)
    if notices:
        changes.append(Change("notices", "planned", None, notices))
    if desired.restrictions != snapshot.restrictions:
        changes.append(
            Change("restrictions", "in_force", snapshot.restrictions, desired.restrictions)
        )
    if desired.standing != snapshot.standing_requested:
        changes.append(
            Change("standing", "requested", snapshot.standing_requested, desired.standing)
        )
    return tuple(changes)


def notice_changes(
    snapshot: Snapshot, desired: Desired, now: datetime | None = None
) -> dict[str, list[str]]:
    """New messages to plan, waiting ones no longer true (withdrawn) or due on another
    day (rescheduled), and shadow ones to send now that the account is enforced. A key
    already planned, whatever became of it, is never planned again. A shadow one whose
    day has not come is withdrawn too: shadow mode would not have sent it either."""
    stored = snapshot.notices
    planned = {notice.key: notice for notice in desired.notices}
    waiting = {
        key
        for key, row in stored.items()
        if row.status == "scheduled"
        or (row.status == "shadow" and now is not None and row.due_at > now)
    }
    changes = {
        "new": sorted(planned.keys() - stored.keys()),
        "withdrawn": sorted(
            key for key in waiting - planned.keys() if stored[key].kind not in SETTLED_KINDS
        ),
        "rescheduled": sorted(
            key for key in waiting & planned.keys() if stored[key].due_at != planned[key].due_at
        ),
        "promoted": sorted(
            key
            for key in planned.keys() & stored.keys()
            if desired.enforced and stored[key].status == "shadow"
        ),
    }
    return {name: keys for name, keys in changes.items() if keys}
