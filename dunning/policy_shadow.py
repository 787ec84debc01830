"""A candidate policy version in shadow next to the version in force.

Every recompute (`engine.handle`) also computes the candidate's decision from the same
snapshot: pure, nothing applied. Where the two differ in what the customer would live
through (state, level, restrictions, standing, the next retry and review, cancellations,
messages) one `PolicyShadowDecision` row records both, once per distinct difference (an
INSERT … ON CONFLICT DO NOTHING); an account on which they agree costs no statement. The
shadow report (`report`) is what the team reads for a week before activating.
"""

import hashlib
import json
from datetime import datetime

from dunning.compute import Desired, compute
from dunning.models import PolicyShadowDecision
from dunning.policy_versions import candidate_for
from dunning.snapshot import Snapshot


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def outcome(desired: Desired) -> dict:
    """What a decision means for the customer, as plain JSON."""
    case = desired.case
    return {
        "state": str(case.state) if case else None,
        "resolution": str(case.resolution) if case else None,
        "level": str(case.level) if case else None,
        "next_retry_at": _iso(case.next_retry_at) if case else None,
        "next_review_at": _iso(case.next_review_at) if case else None,
        "cancel_subscriptions": sorted(case.cancel_subscriptions) if case else [],
        "revert_upgrades": sorted(case.revert_upgrades) if case else [],
        "restrictions": dict(sorted(desired.restrictions.items())),
        "standing": desired.standing,
        # Outside the rollout gate the consequences wait here instead.
        "would_apply": case.shadow if case else {},
        "notices": sorted(f"{n.kind}@{_iso(n.due_at)}" for n in desired.notices),
    }


def differences(decided: Desired, candidate: Desired) -> list[dict]:
    ours, theirs = outcome(decided), outcome(candidate)
    return [
        {"field": name, "decided": ours[name], "candidate": theirs[name]}
        for name in ours
        if ours[name] != theirs[name]
    ]


def shadow_candidate(
    *, account_id: int, snapshot: Snapshot, now: datetime, decided: Desired, version: str
) -> list[dict]:
    """Compute the candidate's decision and record where it differs; returns the differences."""
    policy = candidate_for(snapshot)
    if policy is None:
        return []
    theirs = compute(snapshot, now, policy)
    found = differences(decided, theirs)
    if found:
        text = json.dumps(found, sort_keys=True)
        PolicyShadowDecision.objects.bulk_create(
            [
                PolicyShadowDecision(
                    account_id=account_id,
                    candidate=snapshot.policy_candidate,
                    policy_version=version,
                    at=now,
                    differences=found,
                    decided=decided.summary(),
                    candidate_decision=theirs.summary(),
                    fingerprint=hashlib.sha256(text.encode()).hexdigest(),
                )
            ],
            ignore_conflicts=True,
        )
    return found


def report(*, candidate: int, since: datetime, limit: int = 500) -> list[dict]:
    """The latest difference per account since `since`, newest first."""
    rows = (
        PolicyShadowDecision.objects.filter(candidate=candidate, at__gte=since)
        .select_related("account")
        .order_by("-at", "-pk")
    )
    latest: dict[int, PolicyShadowDecision] = {}
    for row in rows.iterator():
        latest.setdefault(row.account_id, row)
        if len(latest) >= limit:
            break
    return [
        {
            "account_id": row.account_id,
            "stripe_customer_id": row.account.stripe_customer_id,
            "at": row.at,
            "policy_version": row.policy_version,
            "differences": row.differences,
            "decided": row.decided,
            "candidate": row.candidate_decision,
        }
        for row in latest.values()
    ]
