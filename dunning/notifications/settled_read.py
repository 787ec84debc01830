"""What the claim of a settled case's message reads, in one statement on PostgreSQL.

The news of a settled case (recovered, bad debt paid) is not checked against a plan, so
its claim needs no snapshot: the account (locked, as every claim locks it), whether the
account is inside the rollout gate, the message itself, and the account's messages that
can hold it back a day (those still scheduled and those claimed in the last day). The
snapshot read and the message's own read were most of a settled message's claim: every
paid retry sends one ("recovered").
"""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection

from billing_events.models import Account
from core.locks import account_lock_clause
from core.model_rows import ModelRows
from core.prepared import PreparedStatement
from dunning import rollout
from dunning.models import CustomerNotice, RolloutGate
from dunning.snapshot import NoticeView

ACCOUNT_ROWS = ModelRows(Account)
NOTICE_ROWS = ModelRows(CustomerNotice)
_GATE = ModelRows(RolloutGate).table
_NOTICES = NOTICE_ROWS.table

READ = PreparedStatement(
    "dunning_settled_notice_read",
    f"""SELECT {ACCOUNT_ROWS.columns("a")}, {NOTICE_ROWS.columns("n")},
  (SELECT g.stage FROM {_GATE} g WHERE g.id = {RolloutGate.SINGLETON}),
  (SELECT g.kill_switch FROM {_GATE} g WHERE g.id = {RolloutGate.SINGLETON}),
  (SELECT g.allowlist::text FROM {_GATE} g WHERE g.id = {RolloutGate.SINGLETON}),
  (SELECT json_agg(json_build_object('key', o.key, 'kind', o.kind, 'status', o.status,
     'due_at', o.due_at, 'claimed_at', o.claimed_at))::text
   FROM {_NOTICES} o WHERE o.account_id = a.id
     AND (o.status = 'scheduled' OR o.claimed_at > %(day_ago)s))
FROM {ACCOUNT_ROWS.table} a LEFT JOIN {_NOTICES} n ON n.id = %(notice)s AND n.account_id = a.id
WHERE a.id = %(account)s{account_lock_clause("a")}""",
    {"day_ago": "timestamptz", "notice": "bigint", "account": "bigint"},
)


@dataclass(frozen=True)
class SettledRead:
    account: Account
    notice: CustomerNotice | None
    enforced: bool
    notices: dict[str, NoticeView]  # scheduled, or claimed in the last day


def read(notice_id: int, *, account_id: int, now: datetime, day: timedelta) -> SettledRead | None:
    """The account locked and what the claim needs; None for an unknown account. Call
    inside a transaction, on PostgreSQL."""
    params = {"day_ago": now - day, "notice": notice_id, "account": account_id}
    with connection.cursor() as cursor:
        cursor.execute(READ.sql_to_send(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(ACCOUNT_ROWS.fields)
    ends = split + len(NOTICE_ROWS.fields)
    account = ACCOUNT_ROWS.build(row[:split])
    notice_row = row[split:ends]
    stage, kill_switch, allowlist, notices = row[ends:]
    return SettledRead(
        account=account,
        notice=NOTICE_ROWS.build(notice_row) if notice_row[0] is not None else None,
        enforced=rollout.in_gate(
            stripe_customer_id=account.stripe_customer_id,
            stage=stage or rollout.default_stage(),
            kill_switch=bool(kill_switch),
            allowlist=json.loads(allowlist) if allowlist else [],
        ),
        notices={
            other["key"]: NoticeView(
                other["key"],
                other["kind"],
                other["status"],
                datetime.fromisoformat(other["due_at"]),
                datetime.fromisoformat(other["claimed_at"]) if other["claimed_at"] else None,
            )
            for other in json.loads(notices or "[]")
        },
    )
