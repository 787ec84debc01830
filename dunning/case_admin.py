"""The dunning case in the support admin: filters, the case page, and support's levers.

The only levers are the actions on cases, and they call the same `dunning.support` services
as NinjaPanel's API, audited with the admin user's name; they need `support_actions`.
"""

import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from core import clock
from core.admin import ReadOnlyForSupport, SupportReadOnlyAdmin
from core.permissions import can_act
from dunning import support
from dunning.models import (
    BadDebtEpisode,
    CaseState,
    CaseTransition,
    DunningCase,
)
from dunning.stripe_conflicts import CANCELLED, KINDS, RETRIED, conflicted_cases
from dunning.stuck import stuck_cases
from dunning.support_api import selectors


class InBadDebtFilter(admin.SimpleListFilter):
    title = "in bad debt"
    parameter_name = "bad_debt"

    def lookups(self, request, model_admin):
        return [("yes", "In bad debt"), ("no", "Not in bad debt")]

    def queryset(self, request, queryset: QuerySet[DunningCase]):
        open_episode = BadDebtEpisode.objects.filter(case_id=OuterRef("pk"), exited_at__isnull=True)
        in_bad_debt = Q(state=CaseState.ESCALATED) | Exists(open_episode)
        if self.value() == "yes":
            return queryset.filter(in_bad_debt)
        if self.value() == "no":
            return queryset.exclude(in_bad_debt)
        return queryset


class StuckFilter(admin.SimpleListFilter):
    """Lifting (money in, waiting for side effects) with no decision for too long
    (LIFTING_STUCK_AFTER_SECONDS): the same cases the metrics gauge counts."""

    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request, model_admin):
        return [("yes", "Stuck in lifting")]

    def queryset(self, request, queryset: QuerySet[DunningCase]):
        if self.value() != "yes":
            return queryset
        return queryset.filter(pk__in=stuck_cases(now=clock.now()).values("pk"))


class StripeConflictFilter(admin.SimpleListFilter):
    """Open cases where Stripe Billing still retries or cancels on its own: the same cases
    the metrics gauge dunning_stripe_conflict_cases counts."""

    title = "Stripe conflict"
    parameter_name = "stripe_conflict"

    def lookups(self, request, model_admin):
        return [
            ("any", "Any Stripe conflict"),
            (RETRIED, "Stripe retried an invoice"),
            (CANCELLED, "Stripe cancelled a subscription"),
        ]

    def queryset(self, request, queryset: QuerySet[DunningCase]):
        if self.value() not in (*KINDS, "any"):
            return queryset
        found = conflicted_cases()
        kinds = KINDS if self.value() == "any" else (self.value(),)
        return queryset.filter(pk__in={pk for kind in kinds for pk in found[kind]})


class CaseTransitionInline(ReadOnlyForSupport, admin.TabularInline):
    model = CaseTransition
    fields = ("at", "from_state", "to_state", "trigger", "actor", "decision")
    readonly_fields = fields
    ordering = ("at", "pk")
    extra = 0
    can_delete = False
    show_change_link = False


class HoldForm(forms.Form):
    """The intermediate page of "Pause dunning" and "Extend grace"."""

    reason = forms.CharField(max_length=255, help_text="Kept on the case and in the audit.")
    days = forms.IntegerField(min_value=1, max_value=365, initial=7, help_text="From now.")


HOLD_FORM_TEMPLATE = "admin/dunning/dunningcase/hold_form.html"


@admin.register(DunningCase)
class DunningCaseAdmin(SupportReadOnlyAdmin):
    list_display = (
        "id",
        "account",
        "state",
        "level",
        "resolution",
        "decline_class",
        "next_retry_at",
        "paused_until",
        "grace_until",
        "last_decision_at",
        "opened_at",
    )
    list_select_related = ("account", "last_decision")
    list_filter = (
        "state",
        "level",
        "decline_class",
        InBadDebtFilter,
        StuckFilter,
        "resolution",
        StripeConflictFilter,
    )
    search_fields = ("account__stripe_customer_id", "account__email")
    ordering = ("-opened_at", "-pk")
    actions = ("recompute", "pause_dunning", "extend_grace")
    inlines = (CaseTransitionInline,)
    fieldsets = (
        (None, {"fields": ("account", "state", "resolution", "level", "decline_class")}),
        ("Why", {"fields": ("explanation", "policy_version")}),
        (
            "Money and schedule",
            {
                "fields": (
                    "amount_overdue",
                    "earliest_unpaid_at",
                    "next_retry_at",
                    "next_review_at",
                    "opened_at",
                    "resolved_at",
                )
            },
        ),
        (
            "Support holds",
            {"fields": ("paused_until", "pause_reason", "grace_until", "grace_reason")},
        ),
        ("Customer notices", {"fields": ("customer_notices",)}),
        ("Timeline", {"fields": ("timeline",)}),
    )
    readonly_fields = ("explanation", "customer_notices", "timeline")

    def has_support_action_permission(self, request: HttpRequest) -> bool:
        return can_act(request.user)

    @admin.display(description="last decision", ordering="last_decision__decided_at")
    def last_decision_at(self, case: DunningCase):
        return case.last_decision.decided_at if case.last_decision else None

    @admin.display(description="explanation of the last decision")
    def explanation(self, case: DunningCase) -> str:
        decision = case.last_decision
        if decision is None:
            return "-"
        rules = format_html_join(
            "",
            "<li><strong>{}</strong>: {}<br><small>{}</small></li>",
            (
                (
                    rule.get("rule", ""),
                    rule.get("conclusion", ""),
                    json.dumps(rule.get("facts", {}), sort_keys=True, default=str),
                )
                for rule in decision.explanation or []
            ),
        )
        return format_html(
            '<p class="decision-summary">{}</p><p>{} by {} at {}</p><ul>{}</ul>',
            decision.summary,
            decision.trigger,
            decision.actor,
            decision.decided_at,
            rules,
        )

    @admin.display(description="messages to the customer")
    def customer_notices(self, case: DunningCase) -> str:
        notices = reverse("admin:dunning_customernotice_changelist")
        return format_html(
            '<a href="{}?account__id__exact={}">The messages decided for this account</a>'
            ' &middot; <a href="{}">Preview every message for this account</a>',
            notices,
            case.account_id,
            reverse("admin:dunning_customernotice_preview", args=[case.account_id]),
        )

    @admin.display(description="timeline of the account (newest 100)")
    def timeline(self, case: DunningCase) -> str:
        entries = selectors.account_timeline(account_id=case.account_id, limit=100).entries
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((entry.at, entry.kind, entry.summary) for entry in entries),
        )
        return format_html(
            "<table><thead><tr><th>at</th><th>kind</th><th>what</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.action(description="Recompute", permissions=["support_action"])
    def recompute(self, request: HttpRequest, queryset: QuerySet[DunningCase]) -> None:
        actor = request.user.get_username()
        account_ids = sorted(set(queryset.values_list("account_id", flat=True)))
        changed = sum(
            bool(support.recompute(account_id=account_id, actor=actor).changes)
            for account_id in account_ids
        )
        self.message_user(
            request,
            f"Recomputed {len(account_ids)} account(s): {changed} changed, "
            f"{len(account_ids) - changed} already up to date.",
            messages.SUCCESS,
        )

    @admin.action(description="Pause dunning 7 days", permissions=["support_action"])
    def pause_dunning(self, request: HttpRequest, queryset: QuerySet[DunningCase]):
        return self._hold(
            request,
            queryset,
            action="pause_dunning",
            service=support.pause_dunning,
            title="Pause dunning",
            explanation="No retries and no escalation for these accounts until the pause ends.",
        )

    @admin.action(description="Extend grace 7 days", permissions=["support_action"])
    def extend_grace(self, request: HttpRequest, queryset: QuerySet[DunningCase]):
        return self._hold(
            request,
            queryset,
            action="extend_grace",
            service=support.extend_grace,
            title="Extend grace",
            explanation="No escalation for these accounts until the grace period ends; "
            "retries go on.",
        )

    def _hold(self, request, queryset, *, action, service, title, explanation):
        """The action-with-intermediate-page pattern: a form first, the service on submit."""
        cases = list(queryset.select_related("account").order_by("pk"))
        form = HoldForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            until = clock.now() + timedelta(days=form.cleaned_data["days"])
            self._apply_hold(
                request, cases, service=service, until=until, title=title, **form.cleaned_data
            )
            return None  # back to the changelist, with the messages
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "explanation": explanation,
            "cases": cases,
            "form": form,
            "action": action,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, HOLD_FORM_TEMPLATE, context)

    def _apply_hold(self, request, cases, *, service, until, title, reason, days) -> None:
        actor = request.user.get_username()
        done = []
        for case in cases:
            name = case.account.stripe_customer_id
            if not case.is_open:
                self.message_user(request, f"{name}: case {case.pk} is closed.", messages.WARNING)
                continue
            try:
                service(account_id=case.account_id, until=until, reason=reason, actor=actor)
            except support.NoOpenCase:
                self.message_user(request, f"{name}: no open case any more.", messages.WARNING)
                continue
            done.append(name)
        if done:
            self.message_user(
                request,
                f"{title} until {until:%Y-%m-%d %H:%M} UTC for {len(done)} account(s): "
                f"{', '.join(done)}.",
                messages.SUCCESS,
            )
