from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing_events import ingest
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription, WebhookEvent


class ReadOnlyMirrorAdmin(admin.ModelAdmin):
    """Mirror rows come from Stripe; editing them here would bypass the engine."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyMirrorAdmin):
    list_display = (
        "stripe_event_id",
        "type",
        "status",
        "attempts",
        "next_attempt_at",
        "stripe_created",
        "received_at",
        "short_error",
    )
    list_filter = ("status", "type")
    search_fields = ("stripe_event_id", "account__stripe_customer_id")
    date_hierarchy = "received_at"
    actions = ("reprocess",)

    @admin.display(description="last error")
    def short_error(self, obj: WebhookEvent) -> str:
        return obj.last_error[:80]

    @admin.action(description="Reprocess selected events")
    def reprocess(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        count = ingest.reprocess(event_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} event(s) queued for processing.", messages.SUCCESS)


@admin.register(Account)
class AccountAdmin(ReadOnlyMirrorAdmin):
    list_display = ("stripe_customer_id", "email", "default_payment_method", "created_at")
    search_fields = ("stripe_customer_id", "email")


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyMirrorAdmin):
    list_display = ("stripe_subscription_id", "account", "status", "canceled_at")
    list_filter = ("status",)
    search_fields = ("stripe_subscription_id", "account__stripe_customer_id")


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyMirrorAdmin):
    list_display = (
        "stripe_invoice_id",
        "account",
        "status",
        "billing_reason",
        "amount_due",
        "currency",
        "attempt_count",
        "paid_out_of_band",
    )
    list_filter = ("status", "billing_reason", "paid_out_of_band")
    search_fields = ("stripe_invoice_id", "account__stripe_customer_id")


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ReadOnlyMirrorAdmin):
    list_display = (
        "attempt_key",
        "account",
        "stripe_invoice_id",
        "outcome",
        "decline_code",
        "failure_code",
        "advice_code",
        "attempted_at",
    )
    list_filter = ("outcome", "decline_code")
    search_fields = ("attempt_key", "stripe_invoice_id", "account__stripe_customer_id")
