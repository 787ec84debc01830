"""The case's fields are declared once (`snapshot.CaseView`, and `AccountDunning` for support);
every other list is derived from them, so these checks hold the declarations to the model
and to the decision that fills them."""

from dataclasses import fields

import pytest

from dunning.compute import DesiredCase
from dunning.diff import CASE_FIELDS as ENGINE_CASE_FIELDS
from dunning.models import DunningCase
from dunning.snapshot import CASE_FIELDS, DECIDED_CASE_FIELDS, CaseView
from dunning.snapshot_rows import CASE_JSON, CASE_TIMES
from dunning.snapshot_sql import CASE_COLUMNS
from dunning.support_api.selectors import CASE_FIELDS as SUPPORT_CASE_FIELDS

MODEL_COLUMNS = {f.name for f in DunningCase._meta.concrete_fields} | {"pk"}
DESIRED = {f.name for f in fields(DesiredCase)} | {"next_retry_at"}  # a property


@pytest.mark.parametrize(
    ("derived", "expected"),
    [
        (
            DECIDED_CASE_FIELDS,
            (
                "state",
                "resolution",
                "level",
                "level_since",
                "decline_class",
                "earliest_unpaid_at",
                "amount_overdue",
                "next_review_at",
                "next_retry_at",
                "shadow",
            ),
        ),
        (ENGINE_CASE_FIELDS, DECIDED_CASE_FIELDS),
        (
            CASE_TIMES,
            (
                "level_since",
                "earliest_unpaid_at",
                "next_review_at",
                "next_retry_at",
                "paused_until",
                "grace_until",
                "opened_at",
            ),
        ),
        (CASE_JSON, ("amount_overdue", "shadow")),
        (
            tuple(column.strip() for column in CASE_COLUMNS.split(",")),
            ("c.id AS pk", *(f"c.{name}" for name in CASE_FIELDS[1:])),
        ),
        (
            SUPPORT_CASE_FIELDS,
            (
                "state",
                "level",
                "resolution",
                "decline_class",
                "amount_overdue",
                "opened_at",
                "resolved_at",
                "next_review_at",
                "paused_until",
                "pause_reason",
                "grace_until",
                "grace_reason",
            ),
        ),
    ],
)
def test_each_list_is_derived_from_the_one_declaration(derived, expected):
    assert tuple(derived) == tuple(expected)


@pytest.mark.parametrize(
    ("declared", "home", "where"),
    [
        (CASE_FIELDS, MODEL_COLUMNS, "a DunningCase column (the snapshot selects it)"),
        (DECIDED_CASE_FIELDS, DESIRED, "a field of the decision's DesiredCase (engine.diff)"),
        (SUPPORT_CASE_FIELDS, MODEL_COLUMNS, "a DunningCase column (support reads it)"),
    ],
)
def test_every_declared_case_field_exists_where_it_is_read(declared, home, where):
    missing = [name for name in declared if name not in home]
    assert not missing, f"not {where}: {missing}"


def test_the_case_view_is_built_by_name_only():
    values = {name: None for name in CASE_FIELDS}
    with pytest.raises(TypeError):
        CaseView(*values.values())  # keyword-only: a reordering can never shift a value
    assert CaseView(**values).pk is None
