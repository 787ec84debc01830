"""A notice on its day: is it still true, is the day's one message free, then send it.

Checked under the account lock, from the stores as they are now (the plan is computed
again, as for a payment retry), and released before any mail server is called:

- shadow mode since it was planned: skipped, never sent;
- no longer in the plan (paid, the step passed, the class changed): withdrawn;
- support paused the case: waits until the pause ends;
- one message per account per day: a message went in the last 24 hours, or a more
  important one is due too, so this one waits a day (and is dropped then if no longer
  true);
- no address to write to: skipped.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from billing_events.models import Account
from core import clock
from core.model_rows import ModelRows
from dunning import outbox_items
from dunning.compute import compute
from dunning.engine import read_with_policy
from dunning.models import CustomerNotice
from dunning.notifications import settled_read
from dunning.notifications.context import build_context
from dunning.notifications.plan import PRIORITY, SETTLED_KINDS
from dunning.notifications.render import choose_language, render_notice
from dunning.outcomes import append_event
from dunning.policy import Policy
from dunning.snapshot import CaseView, NoticeView, Snapshot

Status = CustomerNotice.Status
SEND, DROP, WAIT, DONE = "send", "drop", "wait", "done"
# At most one message a day: never two within 24 hours, so never two on one calendar day
# wherever the customer lives.
DAY_APART = timedelta(days=1)
ADDRESS_WAIT = timedelta(hours=1)


@dataclass(frozen=True)
class Claim:
    verdict: str
    notice: CustomerNotice | None = None
    until: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class _Read:
    """What a claim decides on, read under the account lock."""

    account: Account
    notice: CustomerNotice | None
    enforced: bool
    case: CaseView | None
    notices: dict[str, NoticeView]  # at least: scheduled ones, and claimed in the last day
    snapshot: Snapshot | None = None  # the full read, to compute the plan from
    policy: Policy | None = None


def _read(notice_id: int, account_id: int, kind: str, now: datetime) -> _Read | None:
    """A settled case's news (`kind`, as its outbox item names it) is never checked
    against a plan: on PostgreSQL it needs one small statement (`settled_read`) instead
    of the account's snapshot. None: no such account."""
    if kind in SETTLED_KINDS and connection.vendor == "postgresql":
        light = settled_read.read(notice_id, account_id=account_id, now=now, day=DAY_APART)
        if light is None:
            return None
        if light.notice is None or light.notice.kind in SETTLED_KINDS:
            return _Read(light.account, light.notice, light.enforced, None, light.notices)
    try:
        account, snapshot, policy = read_with_policy(account_id=account_id, now=now)
    except Account.DoesNotExist:
        return None
    notice = _notice(notice_id, account_id)
    return _Read(
        account, notice, snapshot.enforced, snapshot.case, snapshot.notices, snapshot, policy
    )


def claim(notice_id: int, *, account_id: int, kind: str = "") -> Claim:
    """`kind`: the message's kind as its outbox item names it (`_read`)."""
    with transaction.atomic():
        now = clock.now()
        read = _read(notice_id, account_id, kind, now)
        if read is None or read.notice is None:
            return Claim(DROP, reason="no such notice")
        account, notice = read.account, read.notice
        if notice.status not in (Status.SCHEDULED, Status.SENDING):
            return Claim(DROP, reason=notice.status)
        if not read.enforced:
            return _close(notice, Status.SKIPPED, "shadow mode: the account is outside the gate")
        planned = None
        if notice.kind not in SETTLED_KINDS:
            # Still in the plan computed now? (A settled case's news stays true: its
            # message is not checked against a plan that no longer speaks of it.)
            desired = compute(read.snapshot, now, read.policy)
            planned = {n.key: n for n in desired.notices}.get(notice.key)
            if planned is None:
                return _close(notice, Status.WITHDRAWN, f"no longer true: {desired.summary()}")
        if notice.status == Status.SCHEDULED:
            waiting = _must_wait(notice, read.case, read.notices, now)
            if waiting is not None:
                return waiting
        # What was true when the case settled is the news; a later re-plan knows less.
        facts = planned.facts if planned is not None else notice.facts
        notice.context = build_context(notice.kind, facts, account, now)
        notice.recipient = account.email
        notice.language = choose_language(account.preferred_locales)
        if notice.channel == CustomerNotice.Channel.EMAIL and not account.email:
            if now < notice.due_at + ADDRESS_WAIT:
                # customer.created may arrive after the invoice's events: wait for it, once.
                until = notice.due_at + ADDRESS_WAIT
                return Claim(WAIT, until=until, reason="no email address yet")
            return _close(notice, Status.SKIPPED, "the customer has no email address")
        try:
            rendered = render_notice(
                notice.kind, notice.context, preferred_locales=[notice.language]
            )
        except ValueError as error:
            # A template or context that cannot make a right message: visible, not retried.
            return _close(notice, Status.FAILED, f"cannot be written: {error}")
        notice.subject = rendered.subject[:255]
        notice.status = Status.SENDING
        notice.claimed_at = notice.claimed_at or now
        notice.save()
        if notice.channel == CustomerNotice.Channel.OUTCOME_EVENT:
            _hand_to_messaging_service(notice, now)
            return Claim(DONE, notice, reason="handed to the messaging service")
    return Claim(SEND, notice)


NOTICE_ROWS = ModelRows(CustomerNotice)
NOTICE = (
    f"SELECT {NOTICE_ROWS.columns('n')} FROM {NOTICE_ROWS.table} n"
    " WHERE n.id = %s AND n.account_id = %s"
)


def _notice(notice_id: int, account_id: int) -> CustomerNotice | None:
    with connection.cursor() as cursor:
        cursor.execute(NOTICE, [notice_id, account_id])
        row = cursor.fetchone()
    return None if row is None else NOTICE_ROWS.build(row)


def _must_wait(
    notice: CustomerNotice, case: CaseView | None, notices: dict[str, NoticeView], now: datetime
) -> Claim | None:
    """From what was read under the lock: every notice claimed in the last day and every
    one still scheduled (`snapshot_sql.NOTICES_KEPT`, `settled_read`)."""
    if (
        notice.kind not in SETTLED_KINDS
        and case is not None
        and case.paused_until is not None
        and case.paused_until > now
    ):
        return Claim(WAIT, until=case.paused_until, reason="support paused the case")
    others = [other for key, other in notices.items() if key != notice.key]
    # A message claimed in the last day wins over a more important one due: it says when
    # the day is free.
    claimed = [o.claimed_at for o in others if o.claimed_at and o.claimed_at > now - DAY_APART]
    if claimed:
        until = max(claimed) + DAY_APART
        return Claim(WAIT, until=until, reason="a message went to this customer today")
    rank = PRIORITY[notice.kind]
    if any(
        o.status == Status.SCHEDULED and o.due_at <= now and PRIORITY.get(o.kind, rank) < rank
        for o in others
    ):
        return Claim(WAIT, until=now + DAY_APART, reason="a more important message goes today")
    return None


def _close(notice: CustomerNotice, status: str, reason: str) -> Claim:
    notice.status = status
    notice.reason = reason[:255]
    notice.save(update_fields=["status", "reason"])
    return Claim(DROP, notice, reason=reason)


def _hand_to_messaging_service(notice: CustomerNotice, now: datetime) -> None:
    append_event(
        account_id=notice.account_id,
        event_type="customer_notice.due",
        payload={
            "stripe_customer_id": notice.context.get("stripe_customer_id", ""),
            "notice": notice.key,
            "kind": notice.kind,
            "language": notice.language,
            "recipient": notice.recipient,
            "subject": notice.subject,
            "context": notice.context,
        },
        decision=notice.decision,
        now=now,
    )
    mark_sent(notice.pk, now)
    if settings.DUNNING_OUTCOME_WEBHOOK_URLS:
        transaction.on_commit(outbox_items.kick_dispatcher)


def mark_sent(notice_id: int, now: datetime) -> None:
    CustomerNotice.objects.filter(pk=notice_id, status=Status.SENDING).update(
        status=Status.SENT, sent_at=now
    )
