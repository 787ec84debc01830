"""The policy as immutable stored versions: create, diff, activate; and the engine's lookup.

Until a version is stored the engine runs the code default (`policy.current_policy`, with its
environment overrides). The first create or activation stores that default as version 1,
under its own label, so the decisions and cases made before carry on as version 1.

Which version computes a case: the one the case records (`DunningCase.policy_version`), so
a case finishes on the version it started with; a new case gets the active one. An
activation with `migrate_open_cases` moves every open case to the new version and makes it
due for review, so beat recomputes each under it.

The lookup costs no statement: the account's snapshot reads the active version's number in
the statement that locks the account (`Snapshot.policy_active`), and parsed versions are
cached per process by that number, so a process reloads them (one query) only after an
activation.
"""

from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Max

from billing_events.models import Account
from core import clock
from dunning.models import OPEN_STATES, DunningCase, PolicyVersion, SupportAction
from dunning.policy import Policy, current_policy
from dunning.policy_document import (
    InvalidPolicy,
    diff_documents,
    policy_from_document,
    policy_to_document,
    validate_document,
)
from dunning.snapshot import Snapshot


def label_for(number: int) -> str:
    return f"v{number}"


def ensure_initial_version() -> PolicyVersion:
    """Version 1, the code default as it runs now, stored and active if nothing is yet."""
    first = PolicyVersion.objects.filter(number=1).first()
    if first is not None:
        return first
    default = current_policy()
    now = clock.now()
    try:
        with transaction.atomic():
            return PolicyVersion.objects.create(
                number=1,
                label=default.version,
                document=policy_to_document(default),
                author="system",
                reason="the code default (with its environment overrides) when versions began",
                created_at=now,
                active=not PolicyVersion.objects.filter(active=True).exists(),
                activated_at=now,
                activated_by="system",
            )
    except IntegrityError:  # another process stored it first
        return PolicyVersion.objects.get(number=1)


def create_version(*, document: object, author: str, reason: str) -> PolicyVersion:
    """A new, inactive version; raises InvalidPolicy (nothing written) if the document is
    not valid."""
    errors = validate_document(document)
    if errors:
        raise InvalidPolicy(errors)
    ensure_initial_version()
    for _ in range(3):  # two creates at once: the loser takes the next number
        try:
            with transaction.atomic():
                number = (PolicyVersion.objects.aggregate(n=Max("number"))["n"] or 0) + 1
                version = PolicyVersion.objects.create(
                    number=number,
                    label=label_for(number),
                    document=document,
                    author=author,
                    reason=reason,
                    created_at=clock.now(),
                )
                _audit(
                    actor=author,
                    action="policy_create",
                    payload={"reason": reason},
                    result={"version": number},
                )
                return version
        except IntegrityError:
            continue
    raise RuntimeError("could not number the new policy version; try again")


def diff_versions(old: PolicyVersion, new: PolicyVersion) -> list[dict]:
    return diff_documents(old.document, new.document)


@dataclass(frozen=True)
class Activation:
    version: PolicyVersion
    previous: int | None
    migrated_cases: int


def activate(
    *, number: int, actor: str, reason: str, migrate_open_cases: bool = False
) -> Activation:
    """Make a version the active one (audited). Open cases stay on their own version
    unless `migrate_open_cases`: then they move to this one and are reviewed at once."""
    ensure_initial_version()
    with transaction.atomic():
        _serialise_changes()
        target = PolicyVersion.objects.get(number=number)
        now = clock.now()
        previous = PolicyVersion.objects.filter(active=True).exclude(pk=target.pk)
        before = previous.values_list("number", flat=True).first()
        previous.update(active=False)
        PolicyVersion.objects.filter(pk=target.pk).update(
            active=True, activated_at=now, activated_by=actor, candidate=False
        )
        migrated = 0
        if migrate_open_cases:
            moving = DunningCase.objects.filter(state__in=OPEN_STATES).exclude(
                policy_version=target.label
            )
            # The engine's lock order, account then case: a recompute holding an account
            # would otherwise save its case back on the old version after this commit.
            accounts = moving.values_list("account_id", flat=True)
            list(Account.objects.select_for_update().filter(pk__in=accounts).order_by("pk"))
            migrated = moving.update(policy_version=target.label, next_review_at=now)
        _audit(
            actor=actor,
            action="policy_activate",
            payload={"reason": reason, "from": before, "migrate_open_cases": migrate_open_cases},
            result={"version": number, "label": target.label, "migrated_cases": migrated},
        )
    return Activation(PolicyVersion.objects.get(pk=target.pk), before, migrated)


def _serialise_changes() -> None:
    """Activations and candidate changes one at a time: each locks every version row (a
    handful), so a second one waits and then sees the first one's active/candidate flags
    instead of tripping the one-active constraint."""
    list(PolicyVersion.objects.select_for_update().order_by("pk").values_list("pk", flat=True))


def _audit(*, actor: str, action: str, payload: dict, result: dict) -> None:
    SupportAction.objects.create(
        account=None, actor=actor, action=action, payload=payload, result=result, at=clock.now()
    )


# The engine's lookup ------------------------------------------------------------------


@dataclass
class _Book:
    active_number: int | None  # None: nothing stored, the code default runs
    active: Policy
    by_label: dict[str, Policy] = field(default_factory=dict)
    by_number: dict[int, Policy] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)  # labels no stored version has


_book: _Book | None = None


def _default_book() -> _Book:
    default = current_policy()
    return _Book(None, default, {default.version: default})


def _load() -> _Book:
    rows = list(PolicyVersion.objects.values_list("number", "label", "document", "active"))
    by_label = {label: policy_from_document(doc, version=label) for _, label, doc, _ in rows}
    by_number = {number: by_label[label] for number, label, _, _ in rows}
    active = next(((n, label) for n, label, _, is_active in rows if is_active), None)
    if active is None:
        return _default_book()
    return _Book(active[0], by_label[active[1]], by_label, by_number)


def _current(active_number: int | None) -> _Book:
    global _book
    if _book is None or _book.active_number != active_number:
        _book = _default_book() if active_number is None else _load()
    return _book


def cached_active() -> Policy:
    """The active policy as this process last saw it (no query): for choosing how far back a
    snapshot reads before the snapshot says which version is active."""
    return (_book or _default_book()).active


def paid_count_cap(policy: Policy) -> int:
    """How far a snapshot counts paid invoices: far enough for the good-payer rule of
    `policy` and of every version this process knows (a case's own, a candidate in
    shadow), so no version's rule sees a count cut short."""
    book = _book or _default_book()
    thresholds = [p.severity.good_payer_min_paid for p in book.by_label.values()]
    return max([policy.severity.good_payer_min_paid, *thresholds])


def active_policy() -> Policy:
    """The active policy, read now (one query): for readers without a snapshot."""
    number = PolicyVersion.objects.filter(active=True).values_list("number", flat=True).first()
    return _current(number).active


def policy_for(snapshot: Snapshot) -> Policy:
    """The policy that computes this account: its case's own version, else the active one."""
    global _book
    book = _current(snapshot.policy_active)
    label = snapshot.case.policy_version if snapshot.case is not None else ""
    if not label:
        return book.active
    if label not in book.by_label and label not in book.unknown and book.active_number:
        _book = book = _load()  # created and activated after this process loaded
        if label not in book.by_label:
            book.unknown.add(label)
    # A label no version has (a code default older than the store): the active policy.
    return book.by_label.get(label, book.active)


def candidate_for(snapshot: Snapshot) -> Policy | None:
    """The candidate version computed in shadow next to the real decision, if there is one."""
    global _book
    number = snapshot.policy_candidate
    if number is None:
        return None
    book = _current(snapshot.policy_active)
    if number not in book.by_number:
        _book = book = _load()  # created after this process loaded
    return book.by_number.get(number)


def set_candidate(*, number: int | None, actor: str, reason: str) -> PolicyVersion | None:
    """Run a version in shadow next to the active one (None: stop). Audited."""
    ensure_initial_version()
    with transaction.atomic():
        _serialise_changes()
        target = None
        if number is not None:
            target = PolicyVersion.objects.get(number=number)
            if target.active:
                raise ValueError(f"version {number} is the active one already")
        before = PolicyVersion.objects.filter(candidate=True).values_list("number", flat=True)
        before = before.first()
        PolicyVersion.objects.filter(candidate=True).update(candidate=False)
        if target is not None:
            PolicyVersion.objects.filter(pk=target.pk).update(candidate=True)
        _audit(
            actor=actor,
            action="policy_candidate",
            payload={"reason": reason, "from": before},
            result={"candidate": number},
        )
    return None if target is None else PolicyVersion.objects.get(pk=target.pk)


def forget_cache() -> None:
    """Tests: start from nothing, as a fresh process does."""
    global _book
    _book = None
