"""Shared set-up of the PostgreSQL benchmarks: each has a database of its own, migrated
and checked against the models, and small helpers to run SQL on Django's connection.
Import after django.setup()."""

import psycopg
from django.apps import apps
from django.core.management import call_command
from django.db import DatabaseError, connection

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


class BenchError(SystemExit):
    """Abort loudly (non-zero exit) with a message."""

    def __init__(self, message: str) -> None:
        super().__init__(f"\nBENCH FAILED: {message}")


def schema_mismatch() -> list[str]:
    """Columns the models have and the tables lack, or the other way round."""
    mismatch = []
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
        for model in apps.get_models():
            table = model._meta.db_table
            if table not in tables:
                mismatch.append(f"no table {table}")
                continue
            have = {c.name for c in connection.introspection.get_table_description(cursor, table)}
            want = {f.column for f in model._meta.concrete_fields}
            mismatch += [f"no column {table}.{c}" for c in sorted(want - have)]
            mismatch += [f"extra column {table}.{c}" for c in sorted(have - want)]
    return mismatch


def prepare_database(db_name: str, admin_dsn: str) -> None:
    """Create the database if missing, migrate it and empty it. If its schema does not
    match the models (a migration edited in place), drop it and start again."""
    mismatch: list[str] = []
    for attempt in range(2):
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name])
            if attempt:
                conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            if attempt or not exists.fetchone():
                conn.execute(f'CREATE DATABASE "{db_name}"')
                print(f"created database {db_name}")
        try:
            call_command("migrate", verbosity=0, interactive=False)
        except DatabaseError as error:  # migrations rewritten since this database was made
            mismatch = [f"migrate failed: {error}".splitlines()[0]]
        else:
            mismatch = schema_mismatch()
        if not mismatch:
            break
        connection.close()
        print(f"database {db_name} does not match the models ({mismatch[0]}): recreating it")
    else:
        raise BenchError(f"after migrate, the database does not match the models: {mismatch}")
    call_command("flush", verbosity=0, interactive=False)


def admin(sql: str, params: list | None = None) -> list[tuple]:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def use_database(name: str) -> None:
    """Point Django's one connection at `name` (reconnecting on the next query)."""
    if connection.settings_dict["NAME"] != name:
        connection.close()
        connection.settings_dict["NAME"] = name


def database_exists(name: str) -> bool:
    return bool(admin("SELECT 1 FROM pg_database WHERE datname = %s", [name]))


def fresh_database(name: str) -> None:
    """Drop and create `name`, migrate it and check its schema against the models."""
    use_database(name)
    connection.close()
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{name}"')
    call_command("migrate", verbosity=0, interactive=False)
    mismatch = schema_mismatch()
    if mismatch:
        raise BenchError(f"after migrate, {name} does not match the models: {mismatch}")


def sql(statement: str, params: dict | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or {})
        return cursor.rowcount


def scalar(statement: str, params: dict | list | None = None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params or {})
        return cursor.fetchone()[0]


def t(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def query(statement: str, params: dict | list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or {})
        return cursor.fetchall()
