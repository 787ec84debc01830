from django.db import migrations


def store_uncompressed(apps, schema_editor):
    """Webhook bodies are a few KB: compressing them costs more CPU on the hot ingest path
    than the disk it saves. PostgreSQL only (SQLite has no such setting)."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE billing_events_webhookevent ALTER COLUMN raw_body SET STORAGE EXTERNAL"
        )


class Migration(migrations.Migration):
    dependencies = [("billing_events", "0001_initial")]

    operations = [migrations.RunPython(store_uncompressed, migrations.RunPython.noop)]
