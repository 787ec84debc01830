"""Shared set-up of the PostgreSQL benchmarks: each has a database of its own, migrated
and checked against the models. Import after django.setup()."""

import psycopg
from django.apps import apps
from django.core.management import call_command
from django.db import DatabaseError, connection


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
