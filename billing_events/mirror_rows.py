"""The mirror's invoice and attempt rows found, written and linked by prepared statements.

Every webhook about an invoice or a charge looks its row up by Stripe's id, then writes it
or the fields that changed, then links the attempts that arrived before their invoice.
Through the ORM each of those statements was compiled afresh (a queryset, a filter with a
Q, `save(update_fields=...)`) and planned afresh by PostgreSQL: about half of a merge's
time, on every event. Here they are written once (`core.row_sql`, `core.model_rows`) and
prepared once per session. The merge rules stay in `billing_events.mirror`; SQLite (the
embedded default) takes the ORM's path for the look-ups and the inserts.
"""

from django.db import connection
from django.db.models import Model

from billing_events.models import Invoice, PaymentAttempt
from core.model_rows import ModelRows
from core.prepared import PreparedStatement
from core.row_sql import RowInsert, RowUpdate

INVOICE_ROWS = ModelRows(Invoice)
ATTEMPT_ROWS = ModelRows(PaymentAttempt)

_INVOICE_BY_STRIPE_ID = PreparedStatement(
    "mirror_invoice_by_stripe_id",
    f"SELECT {INVOICE_ROWS.columns('i')} FROM {INVOICE_ROWS.table} i"
    " WHERE i.stripe_invoice_id = %s",
    ["text"],
)
_ATTEMPT_BY_KEY = PreparedStatement(
    "mirror_attempt_by_key",
    f"SELECT {ATTEMPT_ROWS.columns('p')} FROM {ATTEMPT_ROWS.table} p WHERE p.attempt_key = %s",
    ["text"],
)
_INSERTS = {
    Invoice: RowInsert("mirror_invoice_insert", Invoice),
    PaymentAttempt: RowInsert("mirror_attempt_insert", PaymentAttempt),
}
_UPDATES = {
    model: RowUpdate(
        f"mirror_{name}_update", model, where="id = %(row)s", where_types={"row": "bigint"}
    )
    for model, name in ((Invoice, "invoice"), (PaymentAttempt, "attempt"))
}
# The attempts of the account not yet linked to an invoice that name it: by its id, or by
# the charge or payment intent the invoice names (an empty one names nothing).
_LINK = PreparedStatement(
    "mirror_link_attempts",
    f"""UPDATE {ATTEMPT_ROWS.table} SET invoice_id = %(invoice)s, stripe_invoice_id = %(stripe_id)s
    WHERE invoice_id IS NULL AND account_id = %(account)s AND (stripe_invoice_id = %(stripe_id)s
      OR (%(charge)s <> '' AND stripe_charge_id = %(charge)s)
      OR (%(intent)s <> '' AND stripe_payment_intent_id = %(intent)s))""",
    {
        "invoice": "bigint",
        "stripe_id": "text",
        "account": "bigint",
        "charge": "text",
        "intent": "text",
    },
)


def _one(statement: PreparedStatement, rows: ModelRows, key: str) -> Model | None:
    with connection.cursor() as cursor:
        cursor.execute(statement.sql_to_send(), [key])
        found = cursor.fetchone()
    return rows.build(found) if found is not None else None


def invoice_named(stripe_invoice_id: str) -> Invoice | None:
    if connection.vendor != "postgresql":
        return Invoice.objects.filter(stripe_invoice_id=stripe_invoice_id).first()
    return _one(_INVOICE_BY_STRIPE_ID, INVOICE_ROWS, stripe_invoice_id)


def attempt_keyed(attempt_key: str) -> PaymentAttempt | None:
    if connection.vendor != "postgresql":
        return PaymentAttempt.objects.filter(attempt_key=attempt_key).first()
    return _one(_ATTEMPT_BY_KEY, ATTEMPT_ROWS, attempt_key)


def insert(row: Invoice | PaymentAttempt) -> None:
    """Write a new row (its id set on it)."""
    _INSERTS[type(row)].send(row)


def update(row: Invoice | PaymentAttempt, fields: list[str]) -> None:
    """Write `fields` (as `save(update_fields=...)` names them) of an existing row."""
    columns = [row._meta.get_field(name).attname for name in fields]
    _UPDATES[type(row)].send({name: getattr(row, name) for name in columns}, row=row.pk)


def link_attempts(invoice: Invoice, *, charge_id: str, payment_intent_id: str) -> None:
    """Attach the account's unlinked attempts that name the invoice, its charge or its
    payment intent."""
    with connection.cursor() as cursor:
        cursor.execute(
            _LINK.sql_to_send(),
            {
                "invoice": invoice.pk,
                "stripe_id": invoice.stripe_invoice_id,
                "account": invoice.account_id,
                "charge": charge_id or "",
                "intent": payment_intent_id or "",
            },
        )
