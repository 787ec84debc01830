"""The account lock: the one way every path that changes an account serialises.

It is a row lock (`FOR UPDATE`) on the account's row of the mirror (billing_events'
Account), held until the transaction ends: webhook processing, the engine, the backfill,
a looked-up failure, support's holds and a bad-debt payment all take it, so no two of them
change one account at once, on any machine. `lock_account` takes it alone; the engine's
snapshot takes it inside its own first SELECT (`account_lock_clause`), so the hot path
pays no extra round trip. Both use the one clause below. SQLite has no row locks (it
serialises writers on the whole database), so there the clause is empty.
"""

from functools import cache

from django.apps import apps
from django.db import connection
from django.db.models import Model
from django.db.transaction import TransactionManagementError

from core.model_rows import ModelRows


def account_lock_clause(alias: str) -> str:
    """The clause that locks the account row a SELECT reads as `alias`."""
    return f" FOR UPDATE OF {alias}" if connection.features.has_select_for_update_of else ""


def lock_customer_account(stripe_customer_id: str) -> Model | None:
    """`lock_account` for the account of a Stripe customer, looked up and locked in one
    statement (a webhook names the customer, not the account); None when there is none."""
    return _locked("stripe_customer_id", stripe_customer_id)


def lock_account(account_id: int) -> Model:
    """Lock the account row until the transaction ends and return the account.
    Raises Account.DoesNotExist for an unknown id."""
    account = _locked("id", account_id)
    if account is None:
        raise _account_model().DoesNotExist(f"no account {account_id}")
    return account


def _account_model() -> type[Model]:
    # Looked up by name: the mirror's models sit above this shared module.
    return apps.get_model("billing_events", "Account")


@cache
def _account_rows() -> ModelRows:
    return ModelRows(_account_model())


def _locked(column: str, key: object) -> Model | None:
    if not connection.in_atomic_block:
        raise TransactionManagementError("the account lock is only held inside a transaction")
    rows = _account_rows()
    sql = f"SELECT {rows.columns('a')} FROM {rows.table} a WHERE a.{column} = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql + account_lock_clause("a"), [key])
        found = cursor.fetchone()
    return rows.build(found) if found is not None else None
