"""`core.prepared`: a hot statement planned once per database session."""

import pytest
from django.db import connection, transaction

from core.prepared import PreparedStatement

pytestmark = pytest.mark.django_db

SQUARES = "SELECT n, n * n FROM generate_series(%(low)s, %(high)s) n WHERE n <> %(skip)s"


def rows_of(statement: PreparedStatement, params) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement.sql_to_send(), params)
        return cursor.fetchall()


def test_parameters_and_their_types_must_match():
    with pytest.raises(ValueError, match="parameters"):
        PreparedStatement("bad_named", SQUARES, {"low": "int", "high": "int"})
    with pytest.raises(ValueError, match="2 parameters, 1 types"):
        PreparedStatement("bad_positional", "SELECT %s + %s", ["int"])


def test_a_literal_percent_is_unescaped_in_the_prepared_text():
    statement = PreparedStatement("modulo", "SELECT %(n)s %% 7", {"n": "int"})
    assert statement.prepare == "PREPARE modulo (int) AS SELECT $1 % 7"
    assert rows_of(statement, {"n": 23}) == [(2,)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PREPARE is PostgreSQL's")
def test_it_is_prepared_once_and_answers_as_the_plain_statement():
    statement = PreparedStatement(
        "squares_once", SQUARES, {"low": "int", "high": "int", "skip": "int"}
    )
    params = {"low": 1, "high": 5, "skip": 3}
    plain = rows_of(
        PreparedStatement("squares_plain", SQUARES, dict.fromkeys(params, "int")), params
    )

    assert statement.sql_to_send().startswith("EXECUTE squares_once (")
    assert rows_of(statement, params) == plain == [(1, 1), (2, 4), (4, 16), (5, 25)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'squares_once'")
        assert cursor.fetchone() == (1,)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PREPARE is PostgreSQL's")
def test_a_statement_prepared_in_a_transaction_that_rolled_back_is_still_used():
    statement = PreparedStatement(
        "squares_rolled_back", SQUARES, dict.fromkeys(["low", "high", "skip"], "int")
    )
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        statement.sql_to_send()
        raise ZeroDivisionError
    assert rows_of(statement, {"low": 2, "high": 2, "skip": 0}) == [(2, 4)]


def test_behind_a_transaction_pooler_it_is_sent_whole(monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    statement = PreparedStatement(
        "squares_pooled", SQUARES, dict.fromkeys(["low", "high", "skip"], "int")
    )
    assert statement.sql_to_send() == SQUARES
    assert rows_of(statement, {"low": 3, "high": 3, "skip": 0}) == [(3, 9)]
