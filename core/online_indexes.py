"""Index operations for migrations that run while the service takes traffic.

On PostgreSQL an index is built and dropped CONCURRENTLY (the webhook ingest keeps
writing meanwhile; the migration must say `atomic = False`); SQLite, the embedded
default, builds plainly.
"""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
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
