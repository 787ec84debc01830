"""One account lock: `core.locks.lock_account` and the engine's snapshot take the same row
lock, so a path holding it keeps the other out (two real PostgreSQL connections)."""

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.db.transaction import TransactionManagementError

from billing_events.models import Account
from core import clock
from core.locks import lock_account, lock_customer_account
from dunning.snapshot_pg import lock_and_read

pytestmark = pytest.mark.django_db(transaction=True)


def _read_snapshot(account_id: int) -> None:
    lock_and_read(
        account_id=account_id,
        now=clock.now(),
        card_window=timedelta(days=30),
        memory=timedelta(days=90),
    )


def _lock_by_customer(account_id: int) -> None:
    """The webhook path's lock: the account named by its Stripe customer."""
    customer = Account.objects.values_list("stripe_customer_id", flat=True).get(pk=account_id)
    assert lock_customer_account(customer).pk == account_id


def _blocked_elsewhere(take_lock, account_id: int) -> bool:
    """Whether `take_lock(account_id)` on another connection waits for the lock held here."""
    outcome: list[bool] = []

    def other() -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '200ms'")
                take_lock(account_id)
            outcome.append(False)
        except OperationalError:
            outcome.append(True)
        finally:
            connection.close()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=10)
    return outcome == [True]


@pytest.mark.parametrize(
    ("holder", "other"),
    [
        (lock_account, lock_account),
        (lock_account, _read_snapshot),
        (_read_snapshot, lock_account),
        (_lock_by_customer, _read_snapshot),
        (_read_snapshot, _lock_by_customer),
        (_lock_by_customer, lock_account),
    ],
    ids=[
        "helper-helper",
        "helper-snapshot",
        "snapshot-helper",
        "customer-snapshot",
        "snapshot-customer",
        "customer-helper",
    ],
)
def test_the_helper_and_the_snapshot_take_one_lock(holder, other):
    account = Account.objects.create(stripe_customer_id="cus_lock")
    with transaction.atomic():
        holder(account.pk)
        assert _blocked_elsewhere(other, account.pk)
    assert not _blocked_elsewhere(other, account.pk)  # released at commit


def test_lock_account_returns_the_account_and_refuses_outside_a_transaction():
    account = Account.objects.create(stripe_customer_id="cus_lock")
    with transaction.atomic():
        assert lock_account(account.pk).stripe_customer_id == "cus_lock"
        with pytest.raises(Account.DoesNotExist):
            lock_account(account.pk + 1000)
    with pytest.raises(TransactionManagementError):
        lock_account(account.pk)


def test_lock_customer_account_finds_the_customer_or_none_and_refuses_outside_a_transaction():
    account = Account.objects.create(stripe_customer_id="cus_lock")
    with transaction.atomic():
        assert lock_customer_account("cus_lock").pk == account.pk
        assert lock_customer_account("cus_unknown") is None
    with pytest.raises(TransactionManagementError):
        lock_customer_account("cus_lock")
