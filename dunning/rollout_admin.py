"""Admin for the rollout gate (changed only through dunning.rollout, with a reason) and
read-only views of shadow decisions and drift scans."""

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from core.admin import SupportReadOnlyAdmin
from core.permissions import can_act, can_read
from dunning import rollout
from dunning.models import DriftScan, RolloutGate, ShadowDecision


class RolloutGateForm(forms.ModelForm):
    reason = forms.CharField(max_length=500, help_text="why: kept in the audit trail")

    class Meta:
        model = RolloutGate
        fields = ("stage", "kill_switch", "allowlist")


@admin.register(RolloutGate)
class RolloutGateAdmin(admin.ModelAdmin):
    form = RolloutGateForm
    list_display = ("__str__", "stage", "kill_switch", "updated_at", "updated_by")
    readonly_fields = ("updated_at", "updated_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return can_act(request.user) and not RolloutGate.objects.exists()

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return can_act(request.user)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return can_read(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return can_read(request.user)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: RolloutGate, form, change: bool) -> None:
        rollout.set_gate(
            stage=form.cleaned_data["stage"],
            kill_switch=form.cleaned_data["kill_switch"],
            allowlist=form.cleaned_data["allowlist"] or [],
            actor=request.user.get_username(),
            reason=form.cleaned_data["reason"],
        )


@admin.register(ShadowDecision)
class ShadowDecisionAdmin(SupportReadOnlyAdmin):
    list_display = ("at", "account", "stage", "level", "would_apply", "summary")
    list_filter = ("stage", "level")
    search_fields = ("account__stripe_customer_id",)
    date_hierarchy = "at"


@admin.register(DriftScan)
class DriftScanAdmin(SupportReadOnlyAdmin):
    list_display = (
        "started_at",
        "finished_at",
        "candidates",
        "drifted",
        "remediated",
        "deferred",
    )
