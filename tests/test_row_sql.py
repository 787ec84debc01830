"""`core.row_sql` and `core.model_rows`: hot rows written and read by statements built once
from the model, which must write and read exactly what the ORM would."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Subquery
from django.db.models.functions import Coalesce
from django.forms.models import model_to_dict
from django.test.utils import CaptureQueriesContext

from billing_events.models import Account
from core.model_rows import ModelRows
from core.row_sql import RowInsert, RowUpdate
from dunning.models import CustomerNotice, OutboxItem, OutcomeEvent
from dunning.outcomes import OUTCOME_INSERT

pytestmark = pytest.mark.django_db
ON_POSTGRESQL = connection.vendor == "postgresql"
AT = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)

NOTICE_INSERT = RowInsert("test_notice_insert", CustomerNotice)
ITEM_UPDATE = RowUpdate(
    "test_item_update",
    OutboxItem,
    where="id = %(item)s AND status = %(was)s",
    where_types={"item": "bigint", "was": "text"},
)


def a_notice(account: Account, key: str) -> CustomerNotice:
    return CustomerNotice(
        account=account,
        key=key,
        kind=CustomerNotice.Kind.PAYMENT_FAILED,
        status=CustomerNotice.Status.SCHEDULED,
        due_at=AT,
        facts={"amount": 4900, "currency": "eur", "nested": {"é": [1, None, True]}},
        context={},
        created_at=AT - timedelta(seconds=1),
    )


def as_stored(model, pk: int) -> dict:
    return model_to_dict(model.objects.get(pk=pk))


def test_an_inserted_row_is_the_row_save_writes():
    account = Account.objects.create(stripe_customer_id="cus_rows")
    saved = a_notice(account, "saved")
    saved.save()
    sent = a_notice(account, "sent")
    with CaptureQueriesContext(connection) as captured:
        NOTICE_INSERT.send(sent)
    assert sent.pk is not None and not sent._state.adding
    if ON_POSTGRESQL:
        assert captured.captured_queries[-1]["sql"].startswith("EXECUTE test_notice_insert")
    row, expected = as_stored(CustomerNotice, sent.pk), as_stored(CustomerNotice, saved.pk)
    for row_of in (row, expected):
        row_of.pop("id"), row_of.pop("key")
    assert row == expected


def test_a_computed_column_comes_back_onto_the_object():
    account = Account.objects.create(stripe_customer_id="cus_numbered")
    other = Account.objects.create(stripe_customer_id="cus_other")

    def event(of: Account) -> OutcomeEvent:
        last = OutcomeEvent.objects.filter(account=of).order_by("-sequence")
        row = OutcomeEvent(
            account=of,
            sequence=Coalesce(Subquery(last.values("sequence")[:1]), 0) + 1,
            type="dunning.opened",
            payload={},
            created_at=AT,
        )
        OUTCOME_INSERT.send(row)
        return row

    numbers = [event(account).sequence, event(other).sequence, event(account).sequence]
    assert numbers == [1, 1, 2]
    stored = OutcomeEvent.objects.filter(account=account).order_by("sequence")
    assert list(stored.values_list("sequence", flat=True)) == [1, 2]


def test_an_update_sets_only_its_columns_where_its_condition_holds():
    account = Account.objects.create(stripe_customer_id="cus_update")
    item = OutboxItem.objects.create(
        account=account,
        kind="payment_retry",
        key="k1",
        payload={"a": 1},
        next_attempt_at=AT,
        created_at=AT,
    )
    before = as_stored(OutboxItem, item.pk)
    done = {"status": "done", "result": {"outcome": "succeeded"}, "completed_at": AT}
    assert ITEM_UPDATE.send(done, item=item.pk, was="superseded") == 0
    assert as_stored(OutboxItem, item.pk) == before
    with CaptureQueriesContext(connection) as captured:
        assert ITEM_UPDATE.send(done, item=item.pk, was="pending") == 1
    if ON_POSTGRESQL:
        assert captured.captured_queries[-1]["sql"].startswith("EXECUTE test_item_update_")
    assert as_stored(OutboxItem, item.pk) == {**before, **done}
    # Another set of columns is another statement; the first still answers as before.
    assert ITEM_UPDATE.send({"attempts": 3}, item=item.pk, was="done") == 1
    assert ITEM_UPDATE.send(done, item=item.pk, was="pending") == 0
    assert as_stored(OutboxItem, item.pk) == {**before, **done, "attempts": 3}


def test_a_column_cannot_be_both_set_and_a_condition():
    with pytest.raises(ValueError, match="both set and in the condition"):
        RowUpdate("test_clash", OutboxItem, where="id = %(id)s", where_types={"id": "bigint"}).send(
            {"id": 1}, id=1
        )


def test_a_row_read_by_hand_is_the_model_a_query_gives():
    account = Account.objects.create(stripe_customer_id="cus_read")
    notice = a_notice(account, "read")
    notice.claimed_at = AT + timedelta(hours=1)
    notice.save()
    rows = ModelRows(CustomerNotice)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {rows.columns('n')} FROM {rows.table} n WHERE n.id = %s", [notice.pk]
        )
        built = rows.build(cursor.fetchone())
    assert isinstance(built, CustomerNotice) and not built._state.adding
    assert model_to_dict(built) == as_stored(CustomerNotice, notice.pk)
    assert built.facts["nested"] == {"é": [1, None, True]}
    assert built.claimed_at == AT + timedelta(hours=1)
