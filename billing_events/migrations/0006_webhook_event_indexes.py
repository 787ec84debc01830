"""Only the indexes a query uses on the webhook event log (issue #16).

Eight indexes made every webhook INSERT write eight index entries. Kept: the primary key
and the unique event id (the same index, now declared as a UniqueConstraint under its
old name, so it is not rebuilt). Gone: the LIKE indexes on stripe_event_id and type and
the plain index on type (no query filters on them), and the full indexes on account and
processed_at, replaced by partial ones that a new row (no account yet, not processed)
never enters. The pump's index drops its leading status column, which its condition
already fixes, so it hands out due rows in order without a sort.

On PostgreSQL every index is built and dropped CONCURRENTLY, new before old: the ingest
keeps writing meanwhile and no query is ever without its index. SQLite builds plainly.
"""

import django.db.models.deletion
from django.db import migrations, models

from core.online_indexes import AddIndexOnline, RemoveIndexOnline, drop_implied_indexes

TABLE = "billing_events_webhookevent"
# The indexes Django made for unique=True and db_index=True in 0001 (their names hash
# only the table and column names, so they are the same in every database).
IMPLIED = {
    "billing_events_webhookevent_stripe_event_id_7da952b3_like": f"{TABLE} (stripe_event_id varchar_pattern_ops)",
    "billing_events_webhookevent_type_5413f6ed": f"{TABLE} (type)",
    "billing_events_webhookevent_type_5413f6ed_like": f"{TABLE} (type varchar_pattern_ops)",
    "billing_events_webhookevent_account_id_d286318e": f"{TABLE} (account_id)",
}


class Migration(migrations.Migration):
    atomic = False  # CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("billing_events", "0005_account_preferred_locales"),
    ]

    operations = [
        AddIndexOnline(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("status__in", ["received", "failed"])),
                fields=["next_attempt_at"],
                name="webhook_event_due_idx",
            ),
        ),
        AddIndexOnline(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("processed_at__isnull", False)),
                fields=["processed_at"],
                name="webhook_event_processed_at_idx",
            ),
        ),
        AddIndexOnline(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("account__isnull", False)),
                fields=["account", "received_at"],
                name="webhook_event_account_idx",
            ),
        ),
        RemoveIndexOnline(model_name="webhookevent", name="webhook_event_pending_idx"),
        RemoveIndexOnline(model_name="webhookevent", name="webhook_event_processed_idx"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="webhookevent",
                    name="stripe_event_id",
                    field=models.CharField(max_length=255),
                ),
                migrations.AddConstraint(
                    model_name="webhookevent",
                    constraint=models.UniqueConstraint(
                        fields=("stripe_event_id",),
                        name="billing_events_webhookevent_stripe_event_id_key",
                    ),
                ),
                migrations.AlterField(
                    model_name="webhookevent",
                    name="type",
                    field=models.CharField(max_length=100),
                ),
                migrations.AlterField(
                    model_name="webhookevent",
                    name="account",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        to="billing_events.account",
                    ),
                ),
            ],
            database_operations=[
                drop_implied_indexes(IMPLIED),
            ],
        ),
    ]
