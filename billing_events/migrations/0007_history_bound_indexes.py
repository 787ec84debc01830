"""Indexes that keep a recompute's cost off the account's history (issue #16).

An account's invoices by (account, status) instead of by account alone: the snapshot's
unsettled invoices and the good-payer count of paid ones are then read without the rest
of the history. The single-column indexes on invoice and payment-attempt account go: each
is the first column of a composite index that serves everything it did, and PostgreSQL
picked the single ones for the snapshot and filtered the whole history (the card's recent
attempts by time, the unsettled invoices by status).

Built and dropped CONCURRENTLY on PostgreSQL, new before old (`core.online_indexes`).
"""

import django.db.models.deletion
from django.db import migrations, models

from core.online_indexes import AddIndexOnline, drop_implied_indexes

# The indexes Django made for the FKs in 0001 (their names hash only table and column names).
IMPLIED = {
    "billing_events_invoice_account_id_afd4fa6f": "billing_events_invoice (account_id)",
    "billing_events_paymentattempt_account_id_ecfa28dd": "billing_events_paymentattempt (account_id)",
}


class Migration(migrations.Migration):
    atomic = False  # CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("billing_events", "0006_webhook_event_indexes"),
    ]

    operations = [
        AddIndexOnline(
            model_name="invoice",
            index=models.Index(fields=["account", "status"], name="invoice_account_status_idx"),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="invoice",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="invoices",
                        to="billing_events.account",
                    ),
                ),
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
            database_operations=[drop_implied_indexes(IMPLIED)],
        ),
    ]
