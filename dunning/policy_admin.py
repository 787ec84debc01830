"""Admin for policy versions: read every version, create one from a document (validated,
each problem named by its path), diff two, activate one (audited). Changes go through the
same `dunning.policy_versions` services as the API and need the `policy_admin` role."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from core.permissions import can_read
from dunning import policy_versions
from dunning.models import PolicyVersion
from dunning.policy_api import can_change_policy
from dunning.policy_document import diff_documents, diff_lines, validate_document


class PolicyVersionForm(forms.ModelForm):
    document = forms.JSONField(widget=forms.Textarea(attrs={"rows": 40, "cols": 100}))
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)

    class Meta:
        model = PolicyVersion
        fields = ("document", "reason")

    def clean_document(self) -> object:
        document = self.cleaned_data["document"]
        errors = validate_document(document)
        if errors:
            raise ValidationError([f"{e.path}: {e.message}" for e in errors])
        return document


class ActivateForm(forms.Form):
    reason = forms.CharField(max_length=2000, help_text="why: kept in the audit trail")
    migrate_open_cases = forms.BooleanField(
        required=False,
        help_text="move cases already in dunning to this version (by default they finish "
        "on the version they started with)",
    )


class CandidateForm(forms.Form):
    reason = forms.CharField(max_length=2000, help_text="why: kept in the audit trail")


@admin.register(PolicyVersion)
class PolicyVersionAdmin(admin.ModelAdmin):
    form = PolicyVersionForm
    list_display = (
        "number",
        "label",
        "active",
        "candidate",
        "author",
        "reason",
        "created_at",
        "activated_at",
    )
    readonly_fields = (
        "number",
        "label",
        "active",
        "candidate",
        "author",
        "reason",
        "created_at",
        "activated_at",
        "activated_by",
        "pretty_document",
    )
    actions = ["diff_selected", "activate_selected", "shadow_selected"]

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return can_read(request.user) or can_change_policy(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return can_change_policy(request.user)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # immutable: edit means a new version

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj=None):
        return ("document", "reason") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return () if obj is None else self.readonly_fields

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        active = PolicyVersion.objects.filter(active=True).first()
        if active is None:
            active = policy_versions.ensure_initial_version()
        return {"document": json.dumps(active.document, indent=2)}

    @admin.display(description="document")
    def pretty_document(self, obj: PolicyVersion) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.document, indent=2))

    def changelist_view(self, request: HttpRequest, extra_context=None):
        policy_versions.ensure_initial_version()
        return super().changelist_view(request, extra_context)

    def save_model(self, request: HttpRequest, obj: PolicyVersion, form, change: bool) -> None:
        created = policy_versions.create_version(
            document=form.cleaned_data["document"],
            author=request.user.get_username(),
            reason=form.cleaned_data["reason"],
        )
        obj.pk, obj.number = created.pk, created.number

    def get_urls(self):
        return [
            path("diff/", self.admin_site.admin_view(self.diff_view), name="policy-diff"),
            path(
                "<int:number>/activate/",
                self.admin_site.admin_view(self.activate_view),
                name="policy-activate",
            ),
            path(
                "<int:number>/candidate/",
                self.admin_site.admin_view(self.candidate_view),
                name="policy-candidate",
            ),
            *super().get_urls(),
        ]

    @admin.action(description="Diff the two selected versions")
    def diff_selected(self, request: HttpRequest, queryset: QuerySet[PolicyVersion]):
        numbers = sorted(queryset.values_list("number", flat=True))
        if len(numbers) != 2:
            self.message_user(request, "Select exactly two versions.", messages.ERROR)
            return None
        url = reverse("admin:policy-diff")
        return HttpResponseRedirect(f"{url}?old={numbers[0]}&new={numbers[1]}")

    @admin.action(description="Activate the selected version…")
    def activate_selected(self, request: HttpRequest, queryset: QuerySet[PolicyVersion]):
        if not can_change_policy(request.user) or queryset.count() != 1:
            self.message_user(request, "Select one version (needs policy_admin).", messages.ERROR)
            return None
        number = queryset.get().number
        return HttpResponseRedirect(reverse("admin:policy-activate", args=[number]))

    @admin.action(description="Run the selected version in shadow as the candidate…")
    def shadow_selected(self, request: HttpRequest, queryset: QuerySet[PolicyVersion]):
        if not can_change_policy(request.user) or queryset.count() != 1:
            self.message_user(request, "Select one version (needs policy_admin).", messages.ERROR)
            return None
        number = queryset.get().number
        return HttpResponseRedirect(reverse("admin:policy-candidate", args=[number]))

    def candidate_view(self, request: HttpRequest, number: int):
        version = get_object_or_404(PolicyVersion, number=number)
        if not can_change_policy(request.user):
            raise PermissionDenied
        form = CandidateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                policy_versions.set_candidate(
                    number=number, actor=request.user.get_username(), **form.cleaned_data
                )
            except ValueError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(request, f"Policy v{number} now runs in shadow.")
            return HttpResponseRedirect(reverse("admin:dunning_policyversion_changelist"))
        active = PolicyVersion.objects.get(active=True)
        lines = diff_lines(diff_documents(active.document, version.document))
        return self._page(request, f"Run policy v{number} in shadow", lines=lines, form=form)

    def diff_view(self, request: HttpRequest):
        if not self.has_view_permission(request):
            raise PermissionDenied
        numbers = [request.GET.get(name, "") for name in ("old", "new")]
        if not all(n.isdigit() and len(n) < 10 for n in numbers):
            return HttpResponseBadRequest("old and new must be version numbers")
        old = get_object_or_404(PolicyVersion, number=int(numbers[0]))
        new = get_object_or_404(PolicyVersion, number=int(numbers[1]))
        lines = diff_lines(diff_documents(old.document, new.document))
        return self._page(request, f"Policy v{old.number} → v{new.number}", lines=lines)

    def activate_view(self, request: HttpRequest, number: int):
        version = get_object_or_404(PolicyVersion, number=number)
        if not can_change_policy(request.user):
            raise PermissionDenied
        form = ActivateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            done = policy_versions.activate(
                number=number, actor=request.user.get_username(), **form.cleaned_data
            )
            self.message_user(
                request,
                f"Policy v{number} is active (was v{done.previous}); "
                f"{done.migrated_cases} open case(s) moved to it.",
            )
            return HttpResponseRedirect(reverse("admin:dunning_policyversion_changelist"))
        active = PolicyVersion.objects.get(active=True)
        lines = diff_lines(diff_documents(active.document, version.document))
        return self._page(request, f"Activate policy v{number}", lines=lines, form=form)

    def _page(self, request: HttpRequest, title: str, **context):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            **context,
        }
        return TemplateResponse(request, "admin/dunning/policyversion/page.html", context)
