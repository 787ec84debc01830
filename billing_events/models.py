"""The raw webhook event log and the mirror of Stripe objects.

Mirror rows are merged, never blindly overwritten: every field merges with an
operation that ignores arrival order (see `billing_events.mirror`), so duplicated
and reordered deliveries converge on the same row.

Columns added after the first release carry a database default as well, so rows
written by plain SQL (bulk loads, benchmarks) that do not name them still insert.
"""

import json

from django.db import models


class WebhookEvent(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received"
        PROCESSED = "processed"
        FAILED = "failed"  # will be retried at next_attempt_at
        DEAD = "dead"  # gave up after WEBHOOK_MAX_ATTEMPTS; needs a person
        IGNORED = "ignored"  # an event type this service does not act on

    # Unique through Meta.constraints: a unique=True field would also get a LIKE index.
    stripe_event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    stripe_created = models.DateTimeField(help_text="Stripe's `created` for the event")
    livemode = models.BooleanField(default=False)
    # The exact bytes Stripe signed (as text): kept verbatim for audit and re-processing,
    # and cheaper to store than a parsed JSON column on the hot ingest path.
    raw_body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    # Indexed by webhook_event_account_idx (Meta), only where set.
    account = models.ForeignKey(
        "billing_events.Account", null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    # Stored by the polling backstop (billing_events.polling): Stripe listed it, no webhook
    # had delivered it. Each one is a gap in delivery worth a look.
    recovered_by_polling = models.BooleanField(default=False, db_default=False)

    class Meta:
        # Every index costs the webhook's INSERT (the hot path) unless its condition leaves
        # the new row out; each one here serves a named query. A new row (received or
        # ignored, no account, not processed) enters only the primary key, the unique
        # event id and, when received, the due index.
        constraints = [
            # Duplicate deliveries: the ingest's ON CONFLICT, and polling's "known" check.
            # The name is the one PostgreSQL gave the former unique=True.
            models.UniqueConstraint(
                fields=["stripe_event_id"], name="billing_events_webhookevent_stripe_event_id_key"
            ),
        ]
        indexes = [
            # The event pump's claim (processing.claim_due: due first, oldest first) and
            # the test clock's next due time.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_event_due_idx",
                condition=models.Q(status__in=["received", "failed"]),
            ),
            # The drift scan's "processed since the last scan" and the metrics' latency
            # window over the last hour.
            models.Index(
                fields=["processed_at"],
                name="webhook_event_processed_at_idx",
                condition=models.Q(processed_at__isnull=False),
            ),
            # One account's events, newest first (the support timeline), its recent
            # invoice events (the drift guard), and SET NULL when an account is deleted.
            models.Index(
                fields=["account", "received_at"],
                name="webhook_event_account_idx",
                condition=models.Q(account__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_event_id} ({self.status})"

    @property
    def payload(self) -> dict:
        """The event as Stripe sent it, parsed."""
        if getattr(self, "_payload", None) is None:
            self._payload = json.loads(self.raw_body)
        return self._payload

    @payload.setter
    def payload(self, event: dict) -> None:
        self._payload = event
        self.raw_body = json.dumps(event, separators=(",", ":"))


class StripeEventPoll(models.Model):
    """The polling backstop's cursor: Stripe's events are listed up to `listed_until`."""

    SINGLETON = 1

    listed_until = models.DateTimeField()
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"events listed until {self.listed_until.isoformat()}"


class Account(models.Model):
    """One per Stripe customer."""

    stripe_customer_id = models.CharField(max_length=255, unique=True)
    email = models.CharField(max_length=255, blank=True, default="")
    # Stripe's `preferred_locales` ("fr-FR", "en"), most preferred first.
    preferred_locales = models.JSONField(default=list, blank=True, db_default=[])
    default_payment_method = models.CharField(max_length=255, blank=True, default="")
    # Newest customer.* event applied; older ones do not overwrite.
    customer_version = models.DateTimeField(null=True, blank=True)
    customer_version_event_id = models.CharField(max_length=255, blank=True, default="")
    # Newest sign that the customer gave us a usable payment method.
    payment_method_updated_at = models.DateTimeField(null=True, blank=True)
    card_expiring_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.stripe_customer_id


class Subscription(models.Model):
    stripe_subscription_id = models.CharField(max_length=255, unique=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="subscriptions")
    status = models.CharField(max_length=32)
    canceled_at = models.DateTimeField(null=True, blank=True)
    price_ids = models.JSONField(default=list, blank=True)
    # [{"price": str, "quantity": int}], sorted by price: the items of the newest version.
    items = models.JSONField(default=list, blank=True, db_default=[])
    version = models.DateTimeField()
    version_event_id = models.CharField(max_length=255)
    # The newest upgrade (an update that added a price or raised a quantity): the items
    # as they were before it, when it happened, and its event id as the tie-break. Kept
    # apart from `version` so a later status change does not hide the upgrade.
    items_before_upgrade = models.JSONField(default=list, blank=True, db_default=[])
    upgraded_at = models.DateTimeField(null=True, blank=True)
    upgrade_event_id = models.CharField(max_length=255, blank=True, default="", db_default="")

    def __str__(self) -> str:
        return f"{self.stripe_subscription_id} ({self.status})"


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        UNCOLLECTIBLE = "uncollectible"
        PAID = "paid"
        VOID = "void"

    stripe_invoice_id = models.CharField(max_length=255, unique=True)
    # Indexed by (account, status) in Meta.
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="invoices", db_index=False
    )
    stripe_subscription_id = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices)
    amount_due = models.BigIntegerField(help_text="minor units")
    amount_paid = models.BigIntegerField(default=0, help_text="minor units")
    amount_remaining = models.BigIntegerField(default=0, help_text="minor units")
    currency = models.CharField(max_length=3)
    billing_reason = models.CharField(max_length=64, blank=True, default="")
    attempt_count = models.PositiveIntegerField(default=0)
    paid_out_of_band = models.BooleanField(default=False)
    stripe_created = models.DateTimeField()
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    marked_uncollectible_at = models.DateTimeField(null=True, blank=True)
    next_payment_attempt = models.DateTimeField(null=True, blank=True)
    # When a failed collection was first seen (invoice.payment_failed). Kept once set, so
    # an invoice settled later still shows it went through dunning, whatever the order.
    payment_failed_at = models.DateTimeField(null=True, blank=True)
    hosted_invoice_url = models.CharField(max_length=1000, blank=True, default="", db_default="")
    # [{"price": str, "quantity": int, "proration": bool}] from the priced lines.
    line_prices = models.JSONField(default=list, blank=True, db_default=[])
    # The newest event whose amounts were applied: last writer by (Stripe's clock,
    # status rank, event id), so a tie on the second still orders deterministically.
    version = models.DateTimeField()
    version_rank = models.PositiveSmallIntegerField(default=0)
    version_event_id = models.CharField(max_length=255)

    class Meta:
        indexes = [
            # In place of the FK's own index on account: an account's invoices of a status
            # (the snapshot's unsettled ones, the good-payer count of paid ones) are found
            # without reading the others, so a recompute costs the same after ten years of
            # paid invoices as after one. Everything else keyed by account uses its first
            # column.
            models.Index(fields=["account", "status"], name="invoice_account_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_invoice_id} ({self.status})"


class PaymentAttempt(models.Model):
    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    # A charge id when Stripe gave one, otherwise the payment intent id.
    attempt_key = models.CharField(max_length=255, unique=True)
    # Indexed by (account, attempted_at) in Meta: a single-column index beside it was the
    # one PostgreSQL picked for the card's recent attempts, reading the whole history.
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="attempts", db_index=False
    )
    invoice = models.ForeignKey(
        Invoice, null=True, blank=True, on_delete=models.SET_NULL, related_name="attempts"
    )
    stripe_invoice_id = models.CharField(max_length=255, blank=True, default="")
    stripe_charge_id = models.CharField(max_length=255, blank=True, default="")
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, default="")
    payment_method = models.CharField(max_length=255, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    amount = models.BigIntegerField(help_text="minor units")
    currency = models.CharField(max_length=3)
    decline_code = models.CharField(max_length=64, blank=True, default="")
    failure_code = models.CharField(max_length=64, blank=True, default="")
    advice_code = models.CharField(max_length=64, blank=True, default="")
    network_advice_code = models.CharField(max_length=16, blank=True, default="")
    network_decline_code = models.CharField(max_length=16, blank=True, default="")
    # The card network, lowercase as Stripe names it ("visa", "mastercard", "amex").
    card_brand = models.CharField(max_length=32, blank=True, default="", db_default="")
    # True only when Stripe's objects prove the customer was present (a 3-D Secure
    # challenge); False means off-session or unknown.
    customer_initiated = models.BooleanField(default=False, db_default=False)
    attempted_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "attempted_at"])]

    def __str__(self) -> str:
        return f"{self.attempt_key} {self.outcome} {self.decline_code}".strip()
