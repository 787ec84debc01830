"""Indexes that keep a recompute's cost off the account's history (issue #16).

The snapshot's invoices in dunning come from a partial index of the unsettled ones (open
or written off), not from all of the account's invoices. The single-column index on
payment attempts' account goes: PostgreSQL picked it for the card's recent attempts and
filtered the whole history by time, where (account, attempted_at) reads only the window;
that index also serves everything the single one did (its leading column).

Built and dropped CONCURRENTLY on PostgreSQL, new before old (`core.online_indexes`).
"""

import django.db.models.deletion
from django.db import migrations, models

from core.online_indexes import AddIndexOnline, is_postgres

# The name Django gave the FK's index in 0001 (it hashes only table and column names).
ATTEMPT_ACCOUNT = "billing_events_paymentattempt_account_id_ecfa28dd"


def drop_attempt_account_index(apps, schema_editor) -> None:
    concurrently = "CONCURRENTLY " if is_postgres(schema_editor) else ""
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {ATTEMPT_ACCOUNT}")


def recreate_attempt_account_index(apps, schema_editor) -> None:
    concurrently = "CONCURRENTLY " if is_postgres(schema_editor) else ""
    schema_editor.execute(
        f"CREATE INDEX {concurrently}IF NOT EXISTS {ATTEMPT_ACCOUNT}"
        " ON billing_events_paymentattempt (account_id)"
    )


class Migration(migrations.Migration):
    atomic = False  # CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("billing_events", "0006_webhook_event_indexes"),
    ]

    operations = [
        AddIndexOnline(
            model_name="invoice",
            index=models.Index(
                condition=models.Q(("status__in", ["open", "uncollectible"])),
                fields=["account"],
                name="invoice_unsettled_idx",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="paymentattempt",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempts",
                        to="billing_events.account",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_attempt_account_index, recreate_attempt_account_index),
            ],
        ),
    ]
