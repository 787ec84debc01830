"""The one handler: lock the account, read the stores, compute, diff, apply the diff.

handle(trigger)
  1. lock the account row (PostgreSQL row lock: one applier per account, any machine)
  2. snapshot = the five stores, in a constant number of queries
  3. desired  = compute(snapshot, now, policy)          pure
  4. changes  = diff(snapshot, desired)                  minimal
  5. if no changes: return, having written nothing
  6. apply in the same transaction: a Decision with the explanation, the case and its
     transitions, restrictions, the standing, and outbox rows for side effects
  7. after commit, wake the outbox dispatcher; workers do the network I/O, unlocked,
     and report back as triggers
"""

from dataclasses import replace
from datetime import datetime, timedelta

from django.db import transaction

from billing_events.models import Account
from core import clock
from dunning.apply import apply
from dunning.compute import compute
from dunning.diff import Outcome, diff
from dunning.policy import Policy
from dunning.policy_shadow import shadow_candidate
from dunning.policy_versions import cached_active, candidate_for, paid_count_cap, policy_for
from dunning.snapshot import Snapshot
from dunning.snapshot_pg import lock_and_read
from dunning.triggers import Trigger


def read_snapshot(
    *, account_id: int, now: datetime, policy: Policy, invoice_hint: str = "", lock: bool = True
) -> tuple[Account, Snapshot]:
    """The account's snapshot; with `lock`, the account row stays locked until the
    transaction ends (the one way every path that changes an account serialises)."""
    return lock_and_read(
        account_id=account_id,
        now=now,
        card_window=policy.retries.card_attempt_window,
        memory=policy.severity.memory,
        lookup_window=policy.retries.unknown_class_wait * 2,
        paid_enough=paid_count_cap(policy),
        invoice_hint=invoice_hint,
        lock=lock,
    )


def _windows(policy: Policy) -> tuple:
    return (
        policy.retries.card_attempt_window,
        policy.severity.memory,
        policy.retries.unknown_class_wait,
    )


def _read_short_for(wanted: Policy, *, read_for: Policy, counted_to: int) -> bool:
    """Whether a snapshot read for `read_for`, its paid invoices counted to `counted_to`,
    misses history `wanted` decides on: other windows, or a higher good-payer threshold
    (a version this process loaded only after the read)."""
    return (
        _windows(wanted) != _windows(read_for) or wanted.severity.good_payer_min_paid > counted_to
    )


def read_with_policy(
    *, account_id: int, now: datetime, invoice_hint: str = "", lock: bool = True
) -> tuple[Account, Snapshot, Policy]:
    """The snapshot and the policy version that computes it (the case's own, else the
    active one: `policy_versions.policy_for`). Read again only when that version reads
    history over other windows than the one first assumed."""
    assumed = cached_active()
    read = {"account_id": account_id, "now": now, "invoice_hint": invoice_hint, "lock": lock}
    counted_to = paid_count_cap(assumed)
    account, snapshot = read_snapshot(policy=assumed, **read)
    policy = policy_for(snapshot)  # may load versions this process had not seen
    if _read_short_for(policy, read_for=assumed, counted_to=counted_to):
        account, snapshot = read_snapshot(policy=policy, **read)
    return account, snapshot, policy


def _as_candidate_reads(
    snapshot: Snapshot, policy: Policy, *, now: datetime, invoice_hint: str
) -> Snapshot:
    """The snapshot the candidate in shadow would have read: read again (no second lock,
    this transaction holds the account) when the first read is short for it, so a
    candidate that lengthens a window is judged on the history it would see."""
    counted_to = paid_count_cap(policy)  # as the snapshot was read, before any reload
    candidate = candidate_for(snapshot)
    if candidate is None or not _read_short_for(candidate, read_for=policy, counted_to=counted_to):
        return snapshot
    _, seen = read_snapshot(
        account_id=snapshot.account_id,
        now=now,
        policy=candidate,
        invoice_hint=invoice_hint,
        lock=False,
    )
    return seen


def handle(trigger: Trigger, *, policy: Policy | None = None) -> Outcome:
    """Recompute one account for any trigger. Idempotent: a second call writes nothing.
    `policy` forces one policy (tests); by default the account's own version computes."""
    with transaction.atomic():
        return recompute_within(trigger, policy=policy)


def recompute_within(trigger: Trigger, *, policy: Policy | None = None) -> Outcome:
    """`handle` inside the caller's transaction, with no savepoint of its own: a caller
    that writes in the same transaction (an outbox item's close) commits or rolls back
    with the recompute, as one."""
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError("recompute_within needs a transaction")
    now = clock.now()
    hint = trigger.detail.get("invoice", "")
    if policy is None:
        account, snapshot, policy = read_with_policy(
            account_id=trigger.account_id, now=now, invoice_hint=hint
        )
    else:
        account, snapshot = read_snapshot(
            account_id=trigger.account_id, now=now, policy=policy, invoice_hint=hint
        )
    desired = compute(snapshot, now, policy)
    if snapshot.policy_candidate is not None:
        shadow_candidate(
            account_id=account.pk,
            snapshot=_as_candidate_reads(snapshot, policy, now=now, invoice_hint=hint),
            now=now,
            decided=desired,
            version=policy.version,
        )
    changes = diff(snapshot, desired, now)
    if not changes:
        return Outcome(account_id=account.pk)
    return apply(
        account=account,
        snapshot=snapshot,
        desired=desired,
        changes=changes,
        trigger=trigger,
        now=now,
        policy=policy,
    )


# A due retry may run this long after its planned moment (beat's tick and queueing).
RETRY_SLACK = timedelta(minutes=5)


def retry_still_planned(*, account_id: int, stripe_invoice_id: str, attempt_number: int) -> bool:
    """Does the plan computed now, from the facts alone, hold exactly this retry? Reads
    under the account lock and releases it before the caller charges (no lock is ever
    held across the network call)."""
    with transaction.atomic():
        now = clock.now()
        _, snapshot, policy = read_with_policy(account_id=account_id, now=now)
        # Plan as if no retry were scheduled: the item asking is the one being judged.
        desired = compute(replace(snapshot, scheduled_retry=None), now, policy)
    plan = desired.case.retry if desired.case is not None else None
    return (
        plan is not None
        and (plan.stripe_invoice_id, plan.attempt_number) == (stripe_invoice_id, attempt_number)
        and plan.at <= now + RETRY_SLACK
    )
