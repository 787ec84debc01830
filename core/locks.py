"""The account lock: the one way every path that changes an account serialises.

It is a row lock (`FOR UPDATE`) on the account's row of the mirror (billing_events'
Account), held until the transaction ends: webhook processing, the engine, the backfill,
a looked-up failure, support's holds and a bad-debt payment all take it, so no two of them
change one account at once, on any machine. `lock_account` takes it alone; the engine's
snapshot takes it inside its own first SELECT (`account_lock_clause`), so the hot path
pays no extra round trip. Both use the one clause below. SQLite has no row locks (it
serialises writers on the whole database), so there the clause is empty.
"""

from django.apps import apps
from django.db import connection
from django.db.models import Model
from django.db.transaction import TransactionManagementError


def account_lock_clause(alias: str) -> str:
    """The clause that locks the account row a SELECT reads as `alias`."""
    return f" FOR UPDATE OF {alias}" if connection.features.has_select_for_update_of else ""


def lock_customer_account(stripe_customer_id: str) -> Model | None:
    """`lock_account` for the account of a Stripe customer, looked up and locked in one
    statement (a webhook names the customer, not the account); None when there is none."""
    account_model = _account_model()
    sql = f"SELECT a.* FROM {account_model._meta.db_table} a WHERE a.stripe_customer_id = %s"
    return next(iter(_locked(account_model, sql, stripe_customer_id)), None)


def lock_account(account_id: int) -> Model:
    """Lock the account row until the transaction ends and return the account.
    Raises Account.DoesNotExist for an unknown id."""
    account_model = _account_model()
    sql = f"SELECT a.* FROM {account_model._meta.db_table} a WHERE a.id = %s"
    found = _locked(account_model, sql, account_id)
    if not found:
        raise account_model.DoesNotExist(f"no account {account_id}")
    return found[0]


def _account_model() -> type[Model]:
    # Looked up by name: the mirror's models sit above this shared module.
    return apps.get_model("billing_events", "Account")


def _locked(account_model: type[Model], sql: str, key: object) -> list[Model]:
    if not connection.in_atomic_block:
        raise TransactionManagementError("the account lock is only held inside a transaction")
    return list(account_model.objects.raw(sql + account_lock_clause("a"), [key]))
