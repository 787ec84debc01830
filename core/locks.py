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


def lock_account(account_id: int) -> Model:
    """Lock the account row until the transaction ends and return the account.
    Raises Account.DoesNotExist for an unknown id."""
    if not connection.in_atomic_block:
        raise TransactionManagementError("the account lock is only held inside a transaction")
    # Looked up by name: the mirror's models sit above this shared module.
    account_model = apps.get_model("billing_events", "Account")
    sql = f"SELECT a.* FROM {account_model._meta.db_table} a WHERE a.id = %s"
    found = list(account_model.objects.raw(sql + account_lock_clause("a"), [account_id]))
    if not found:
        raise account_model.DoesNotExist(f"no account {account_id}")
    return found[0]
