"""Payment outcome events: what dunning tells the rest of the business.

Each decision that changes an account's dunning state, level, resolution or bad-debt
standing appends one event to the account's ordered stream (sequence 1, 2, 3 ...). Each
configured subscriber gets it as a signed webhook through the outbox, in order per account
(a later event waits until the earlier one was delivered), with retries.
"""

from datetime import datetime

import requests
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Subquery
from django.db.models.functions import Coalesce

from billing_events.models import Account
from billing_events.signature import sign_header
from core.row_sql import RowInsert
from dunning.effects.result import EffectResult
from dunning.models import Decision, OutboxItem, OutcomeEvent

SIGNATURE_HEADER = "Dunning-Signature"
_EVENTS = connection.ops.quote_name(OutcomeEvent._meta.db_table)
# The account's next number, as `append_event`'s ORM expression says it (which the
# embedded default sends instead).
OUTCOME_INSERT = RowInsert(
    "dunning_outcome_insert",
    OutcomeEvent,
    values={
        "sequence": f"""COALESCE((SELECT e.sequence FROM {_EVENTS} e
            WHERE e.account_id = %(account_id)s ORDER BY e.sequence DESC LIMIT 1), 0) + 1"""
    },
)
CASE_FIELDS_THAT_MATTER = {"state", "level", "resolution"}


def _event_type(changes) -> str | None:
    by_field = {(c.store, c.field): c for c in changes}
    bad_debt = by_field.get(("bad_debt", "episode"))
    if bad_debt is not None:
        return "bad_debt.entered" if bad_debt.after else "bad_debt.exited"
    state = by_field.get(("case", "state"))
    if state is not None and state.before is None:
        return "dunning.opened"
    if state is not None and state.after == "resolved":
        return "dunning.resolved"
    if any(c.store == "case" and c.field in CASE_FIELDS_THAT_MATTER for c in changes):
        return "dunning.updated"
    return None


def publish_outcome(
    *, account: Account, desired, changes, decision: Decision, now: datetime
) -> list[int]:
    event_type = _event_type(changes)
    if event_type is None:
        return []
    case = desired.case
    return append_event(
        account_id=account.pk,
        event_type=event_type,
        decision=decision,
        now=now,
        payload={
            "stripe_customer_id": account.stripe_customer_id,
            "state": case.state.value if case else None,
            "level": case.level.value if case else "none",
            "resolution": case.resolution.value if case else "",
            "decline_class": case.decline_class if case else "",
            "amount_overdue": case.amount_overdue if case else {},
            "restrictions": sorted(desired.restrictions),
            "bad_debt": case.bad_debt if case else None,
            "reason": desired.summary(),
            "policy_version": decision.policy_version,
            # False in shadow mode: the level was decided, its consequences not applied.
            "enforced": desired.enforced,
        },
    )


def append_event(
    *, account_id: int, event_type: str, payload: dict, decision: Decision | None, now: datetime
) -> list[int]:
    """The next event of the account's stream, and one outbox item per subscriber. Call
    with the account locked (the sequence is read, then written)."""
    event = OutcomeEvent(
        account_id=account_id, type=event_type, decision=decision, created_at=now, payload=payload
    )
    # Numbered in the INSERT itself: one statement, not a read and a write. On PostgreSQL
    # OUTCOME_INSERT says how; the ORM's expression (building it cost more than the
    # statement's run) only where the ORM sends the row.
    if connection.vendor != "postgresql":
        last = OutcomeEvent.objects.filter(account_id=account_id).order_by("-sequence")
        event.sequence = Coalesce(Subquery(last.values("sequence")[:1]), 0) + 1
    OUTCOME_INSERT.send(event)
    urls = settings.DUNNING_OUTCOME_WEBHOOK_URLS
    if not urls:
        return []
    ids = []
    for index, url in enumerate(urls):
        item = OutboxItem.objects.create(
            account_id=account_id,
            decision=decision,
            kind=OutboxItem.Kind.OUTCOME_EVENT,
            key=f"outcome:{event.pk}:{index}",
            payload={"outcome_event": event.pk, "url": url, "sequence": event.sequence},
            next_attempt_at=now,
            created_at=now,
        )
        ids.append(item.pk)
    return ids


def earlier_undelivered(item: OutboxItem) -> bool:
    return OutboxItem.objects.filter(
        account_id=item.account_id,
        kind=OutboxItem.Kind.OUTCOME_EVENT,
        status=OutboxItem.Status.PENDING,
        payload__url=item.payload["url"],
        payload__sequence__lt=item.payload["sequence"],
    ).exists()


def body(event: OutcomeEvent) -> bytes:
    return (
        DjangoJSONEncoder()
        .encode(
            {
                "id": f"dunning_evt_{event.pk}",
                "type": event.type,
                "sequence": event.sequence,
                "created": int(event.created_at.timestamp()),
                "data": event.payload,
            }
        )
        .encode()
    )


def deliver(item: OutboxItem, now: datetime) -> EffectResult:
    """POST one event to one subscriber, signed like Stripe signs its webhooks."""
    event = OutcomeEvent.objects.get(pk=item.payload["outcome_event"])
    payload = body(event)
    headers = {"Content-Type": "application/json", "Idempotency-Key": item.key}
    if settings.DUNNING_OUTCOME_WEBHOOK_SECRET:
        headers[SIGNATURE_HEADER] = sign_header(
            payload=payload,
            secret=settings.DUNNING_OUTCOME_WEBHOOK_SECRET,
            timestamp=int(now.timestamp()),
        )
    try:
        response = requests.post(
            item.payload["url"],
            data=payload,
            headers=headers,
            timeout=settings.DUNNING_OUTCOME_WEBHOOK_TIMEOUT_SECONDS,
        )
    except requests.RequestException as error:
        return EffectResult(ok=False, retryable=True, detail=type(error).__name__)
    if 200 <= response.status_code < 300:
        return EffectResult(ok=True, detail=f"HTTP {response.status_code}")
    return EffectResult(ok=False, retryable=True, detail=f"HTTP {response.status_code}")
