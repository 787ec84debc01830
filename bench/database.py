"""The Django side of a PostgreSQL bench's database (bench/common.py creates it): migrated and
checked against the models, and small helpers to run SQL on Django's connection.
Import after django.setup()."""

from django.apps import apps
from django.core.management import call_command
from django.db import DatabaseError, connection

from bench.common import ADMIN_DSN, BenchError, admin, create_database, database_exists

__all__ = [
    "ADMIN_DSN",
    "BenchError",
    "admin",
    "database_exists",
    "fresh_database",
    "prepare_database",
    "query",
    "scalar",
    "schema_mismatch",
    "sql",
    "t",
    "use_database",
]


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


def prepare_database(db_name: str, admin_dsn: str = ADMIN_DSN) -> None:
    """Create the database if missing, migrate it and empty it. If its schema does not
    match the models (a migration edited in place), drop it and start again."""
    mismatch: list[str] = []
    for attempt in range(2):
        create_database(db_name, drop_first=bool(attempt), admin_dsn=admin_dsn)
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


def use_database(name: str) -> None:
    """Point Django's one connection at `name` (reconnecting on the next query)."""
    if connection.settings_dict["NAME"] != name:
        connection.close()
        connection.settings_dict["NAME"] = name


def fresh_database(name: str) -> None:
    """Drop and create `name`, migrate it and check its schema against the models."""
    use_database(name)
    connection.close()
    create_database(name, drop_first=True)
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


def query(statement: str, params: dict | list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or {})
        return cursor.fetchall()


def t(model) -> str:
    """A model's table name, quoted for SQL."""
    return connection.ops.quote_name(model._meta.db_table)
