"""The engine's records in the support admin, read-only: decisions, transitions, outbox items,
bad-debt episodes and payments, outcome events, support actions, account standing."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core import clock
from core.admin import SupportReadOnlyAdmin, pretty_json
from core.permissions import can_act
from dunning.bad_debt_payment import NotProcessing, release
from dunning.models import (
    AccountStanding,
    BadDebtEpisode,
    BadDebtPayment,
    CaseTransition,
    Decision,
    OutboxItem,
    OutcomeEvent,
    SupportAction,
)
from dunning.payment_sweeper import is_stale


@admin.register(Decision)
class DecisionAdmin(SupportReadOnlyAdmin):
    list_display = ("decided_at", "account", "case", "trigger", "actor", "policy_version", "short")
    list_select_related = ("account",)
    list_filter = ("trigger", "policy_version")
    search_fields = ("account__stripe_customer_id", "actor", "summary")
    date_hierarchy = "decided_at"
    ordering = ("-decided_at", "-pk")
    exclude = ("changes", "explanation")
    readonly_fields = ("changes_json", "explanation_json")

    @admin.display(description="summary")
    def short(self, decision: Decision) -> str:
        return decision.summary[:100]

    @admin.display(description="changes")
    def changes_json(self, decision: Decision) -> str:
        return pretty_json(decision.changes)

    @admin.display(description="explanation")
    def explanation_json(self, decision: Decision) -> str:
        return pretty_json(decision.explanation)


@admin.register(CaseTransition)
class CaseTransitionAdmin(SupportReadOnlyAdmin):
    list_display = ("at", "case", "customer", "from_state", "to_state", "trigger", "actor")
    list_select_related = ("case__account",)
    list_filter = ("to_state", "from_state", "trigger")
    search_fields = ("case__account__stripe_customer_id", "actor")
    date_hierarchy = "at"
    ordering = ("-at", "-pk")

    @admin.display(description="customer", ordering="case__account__stripe_customer_id")
    def customer(self, transition: CaseTransition) -> str:
        return transition.case.account.stripe_customer_id


@admin.register(OutboxItem)
class OutboxItemAdmin(SupportReadOnlyAdmin):
    list_display = (
        "created_at",
        "account",
        "kind",
        "status",
        "attempts",
        "next_attempt_at",
        "completed_at",
        "short_error",
    )
    list_select_related = ("account",)
    list_filter = ("kind", "status")
    search_fields = ("account__stripe_customer_id", "key")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-pk")

    @admin.display(description="last error")
    def short_error(self, item: OutboxItem) -> str:
        return item.last_error[:80]


@admin.register(BadDebtEpisode)
class BadDebtEpisodeAdmin(SupportReadOnlyAdmin):
    list_display = ("account", "case", "reason", "amount", "entered_at", "exited_at", "exit_reason")
    list_select_related = ("account",)
    list_filter = ("reason", "exit_reason", ("exited_at", admin.EmptyFieldListFilter))
    search_fields = ("account__stripe_customer_id",)
    date_hierarchy = "entered_at"
    ordering = ("-entered_at", "-pk")


@admin.register(OutcomeEvent)
class OutcomeEventAdmin(SupportReadOnlyAdmin):
    list_display = ("created_at", "account", "sequence", "type", "decision")
    list_select_related = ("account",)
    list_filter = ("type",)
    search_fields = ("account__stripe_customer_id",)
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-pk")


@admin.register(SupportAction)
class SupportActionAdmin(SupportReadOnlyAdmin):
    list_display = ("at", "actor", "action", "account", "decision")
    list_select_related = ("account",)
    list_filter = ("action",)
    search_fields = ("actor", "account__stripe_customer_id")
    date_hierarchy = "at"
    ordering = ("-at", "-pk")

    @admin.display(description="decision")
    def decision(self, action: SupportAction):
        return (action.result or {}).get("decision_id") or "no change"


@admin.register(AccountStanding)
class AccountStandingAdmin(SupportReadOnlyAdmin):
    list_display = ("account", "requested", "requested_at", "acknowledged", "acknowledged_at")
    list_select_related = ("account",)
    list_filter = ("requested", "acknowledged")
    search_fields = ("account__stripe_customer_id",)


class CrashedPaymentFilter(admin.SimpleListFilter):
    title = "crashed"
    parameter_name = "crashed"

    def lookups(self, request, model_admin):
        return (("yes", "processing past its time (crashed)"),)

    def queryset(self, request, queryset: QuerySet[BadDebtPayment]):
        if self.value() != "yes":
            return queryset
        now = clock.now()
        stale = [p.pk for p in queryset.filter(status="processing") if is_stale(p, now)]
        return queryset.filter(pk__in=stale)


@admin.register(BadDebtPayment)
class BadDebtPaymentAdmin(SupportReadOnlyAdmin):
    """Pay-bad-debt requests. One left `processing` past its time crashed mid-way: the
    sweeper resolves it with Stripe within minutes, or support releases it (audited)."""

    list_display = ("created_at", "account", "idempotency_key", "status", "http_status", "crashed")
    list_select_related = ("account",)
    list_filter = (CrashedPaymentFilter, "status", "http_status")
    search_fields = ("account__stripe_customer_id", "idempotency_key")
    ordering = ("-created_at", "-pk")
    actions = ("release",)

    def has_support_action_permission(self, request: HttpRequest) -> bool:
        return can_act(request.user)

    @admin.display(boolean=True, description="crashed")
    def crashed(self, payment: BadDebtPayment) -> bool:
        return is_stale(payment, clock.now())

    @admin.action(description="Release (stuck in processing)", permissions=["support_action"])
    def release(self, request: HttpRequest, queryset: QuerySet[BadDebtPayment]) -> None:
        actor = request.user.get_username()
        for payment in queryset.order_by("pk"):
            try:
                release(payment_id=payment.pk, actor=actor, reason="released in the admin")
            except NotProcessing as error:
                self.message_user(request, str(error), messages.WARNING)
            else:
                self.message_user(
                    request,
                    f"Released request {payment.pk} ({payment.idempotency_key}).",
                    messages.SUCCESS,
                )
