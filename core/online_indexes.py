"""Index operations for migrations that run while the service takes traffic.

On PostgreSQL an index is built and dropped CONCURRENTLY (the webhook ingest keeps
writing meanwhile; the migration must say `atomic = False`); SQLite, the embedded
default, builds plainly.
"""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations
from django.db.migrations.operations import AddIndex, RemoveIndex


def is_postgres(schema_editor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


class AddIndexOnline(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, *states):
        base = AddIndexConcurrently if is_postgres(schema_editor) else AddIndex
        base.database_forwards(self, app_label, schema_editor, *states)

    def database_backwards(self, app_label, schema_editor, *states):
        base = AddIndexConcurrently if is_postgres(schema_editor) else AddIndex
        base.database_backwards(self, app_label, schema_editor, *states)


class RemoveIndexOnline(RemoveIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, *states):
        base = RemoveIndexConcurrently if is_postgres(schema_editor) else RemoveIndex
        base.database_forwards(self, app_label, schema_editor, *states)

    def database_backwards(self, app_label, schema_editor, *states):
        base = RemoveIndexConcurrently if is_postgres(schema_editor) else RemoveIndex
        base.database_backwards(self, app_label, schema_editor, *states)


def drop_implied_indexes(definitions: dict[str, str]) -> migrations.RunPython:
    """Drop indexes Django made implicitly (an FK's, a unique field's LIKE index), named with
    their definition ("table (columns)") so that going backwards makes them again. SQLite
    never had the LIKE (`pattern_ops`) ones."""

    def forwards(apps, schema_editor) -> None:
        concurrently = "CONCURRENTLY " if is_postgres(schema_editor) else ""
        for name in definitions:
            schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {name}")

    def backwards(apps, schema_editor) -> None:
        postgres = is_postgres(schema_editor)
        concurrently = "CONCURRENTLY " if postgres else ""
        for name, definition in definitions.items():
            if postgres or "pattern_ops" not in definition:
                schema_editor.execute(
                    f"CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {definition}"
                )

    return migrations.RunPython(forwards, backwards)
