"""Customer notices in the admin: the rows (read-only, as every engine row), and a preview
of every message for one account, rendered as that customer would get it.

The preview reads the account's situation and runs the planner on it (no lock, no write):
a message the engine plans now is shown with the planner's own facts; the others with the
open case's figures, else plausible samples (its last invoice, dates from now).
"""

import json
from datetime import datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing_events.models import Account, Invoice
from core import clock
from core.admin import SupportReadOnlyAdmin, pretty_json
from dunning.compute import compute
from dunning.engine import read_snapshot
from dunning.models import OPEN_STATES, CustomerNotice, DunningCase
from dunning.notifications.context import build_context
from dunning.notifications.render import choose_language, render_notice
from dunning.policy import Level, Policy
from dunning.policy_versions import active_policy, policy_for

Kind = CustomerNotice.Kind
PREVIEW_URL_NAME = "dunning_customernotice_preview"
UNPAID = (Invoice.Status.OPEN, Invoice.Status.UNCOLLECTIBLE)
SAMPLE_MONEY = {"amount": 4900, "currency": "usd", "invoice": ""}
# In the order a customer meets them (the Kind's own order is importance).
PREVIEW_ORDER = (
    Kind.CARD_EXPIRING,
    Kind.PAYMENT_FAILED,
    Kind.STEP_AHEAD,
    Kind.FINAL_NOTICE,
    Kind.RECOVERED,
    Kind.BAD_DEBT_PAID,
)


def preview_url(account_id: int) -> str:
    return reverse(f"admin:{PREVIEW_URL_NAME}", args=[account_id])


class PreviewLanguage(forms.Form):
    language = forms.RegexField(
        regex=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$",
        max_length=35,
        required=False,
        help_text="a locale such as fr or fr-FR; empty: the customer's preferred_locales",
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _money(account: Account, case: DunningCase | None) -> tuple[dict, str]:
    """The amount the messages speak of, and where it comes from."""
    if case is not None and case.amount_overdue:
        currency, amount = max(case.amount_overdue.items(), key=lambda item: (item[1], item[0]))
        invoice = (
            Invoice.objects.filter(account=account, status__in=UNPAID)
            .order_by("stripe_created", "pk")
            .values_list("stripe_invoice_id", flat=True)
            .first()
        )
        return {"amount": amount, "currency": currency, "invoice": invoice or ""}, (
            f"its open case {case.pk}"
        )
    last = Invoice.objects.filter(account=account).order_by("-stripe_created", "-pk").first()
    if last is None:
        return dict(SAMPLE_MONEY), "sample figures (the account has no invoice)"
    money = {
        "amount": last.amount_due,
        "currency": last.currency,
        "invoice": last.stripe_invoice_id,
    }
    return money, f"sample figures (its last invoice, {last.stripe_invoice_id})"


def _card_expiry(account: Account, now: datetime) -> datetime:
    if account.card_expiring_at is not None and account.card_expiring_at > now:
        return account.card_expiring_at
    # The end of next month: a card stops working when its expiry month ends.
    next_month = (now.replace(day=1) + timedelta(days=32)).replace(day=1)
    after = (next_month + timedelta(days=32)).replace(day=1)
    return after.replace(hour=0, minute=0, second=0, microsecond=0)


def preview_facts(account: Account, now: datetime, policy: Policy) -> dict[str, tuple[dict, str]]:
    """For every kind of notice: the facts to render it with, and where they come from."""
    case = (
        DunningCase.objects.filter(account=account, state__in=OPEN_STATES)
        .order_by("-opened_at")
        .first()
    )
    money, about = _money(account, case)
    rules = policy.notices
    decline_class = (case.decline_class if case is not None else "") or "soft"
    next_retry = case.next_retry_at if case is not None else now + timedelta(days=3)
    expires = _card_expiry(account, now)
    facts = {
        Kind.FINAL_NOTICE: {
            **money,
            "level": str(Level.CANCELLED),
            "takes_effect_at": _iso(now + rules.final_lead),
            "cancels_at": _iso(now + rules.final_lead),
            "upgrade": False,
        },
        Kind.STEP_AHEAD: {
            **money,
            "level": str(Level.PREMIUM_RESTRICTED),
            "takes_effect_at": _iso(now + rules.step_lead),
            "upgrade": False,
        },
        Kind.PAYMENT_FAILED: {
            **money,
            "decline_class": decline_class,
            "next_retry_at": _iso(next_retry),
            "upgrade": False,
        },
        Kind.RECOVERED: {**money, "upgrade": False},
        Kind.BAD_DEBT_PAID: {**money, "upgrade": False},
        Kind.CARD_EXPIRING: {
            "expires_at": _iso(expires),
            "days_left": max((expires - now).days, 0),
        },
    }
    sources = dict.fromkeys(facts, about)
    sources[Kind.CARD_EXPIRING] = (
        "its card's expiry" if expires == account.card_expiring_at else "a sample expiry date"
    )
    # What the engine would plan now wins: those are the facts the customer would get.
    _, snapshot = read_snapshot(account_id=account.pk, now=now, policy=policy, lock=False)
    for notice in reversed(compute(snapshot, now, policy_for(snapshot)).notices):
        facts[notice.kind] = notice.facts
        sources[notice.kind] = f"planned by the engine now ({notice.key})"
    return {kind: (facts[kind], sources[kind]) for kind in PREVIEW_ORDER}


@admin.register(CustomerNotice)
class CustomerNoticeAdmin(SupportReadOnlyAdmin):
    list_display = (
        "due_at",
        "account",
        "kind",
        "status",
        "channel",
        "language",
        "short_subject",
        "sent_at",
    )
    list_select_related = ("account",)
    list_filter = ("kind", "status", "channel", "language")
    search_fields = ("account__stripe_customer_id", "account__email", "recipient", "key")
    date_hierarchy = "due_at"
    ordering = ("-due_at", "-pk")
    exclude = ("facts", "context")
    readonly_fields = ("preview", "facts_json", "context_json")

    @admin.display(description="subject")
    def short_subject(self, notice: CustomerNotice) -> str:
        return notice.subject[:80]

    @admin.display(description="facts (what the plan knew)")
    def facts_json(self, notice: CustomerNotice) -> str:
        return pretty_json(notice.facts)

    @admin.display(description="context (what was rendered)")
    def context_json(self, notice: CustomerNotice) -> str:
        return pretty_json(notice.context)

    @admin.display(description="preview")
    def preview(self, notice: CustomerNotice) -> str:
        return format_html(
            '<a href="{}">Preview every message for {}</a>',
            preview_url(notice.account_id),
            notice.account,
        )

    def get_urls(self):
        # Before the model's own URLs: "<path:object_id>/" would take "preview/1/".
        view = self.admin_site.admin_view(self.preview_view)
        return [
            path("preview/<int:account_id>/", view, name=PREVIEW_URL_NAME),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest, account_id: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        account = get_object_or_404(Account, pk=account_id)
        form = PreviewLanguage(request.GET)
        chosen = form.cleaned_data["language"] if form.is_valid() else ""
        locales = [chosen] if chosen else list(account.preferred_locales)
        now = clock.now()
        policy = active_policy()
        notices = []
        for kind, (facts, source) in preview_facts(account, now, policy).items():
            shown = {
                "kind": kind,
                "label": Kind(kind).label,
                "source": source,
                "facts": json.dumps(facts, indent=2, sort_keys=True, default=str),
            }
            try:
                context = build_context(kind, facts, account, now)
                shown["rendered"] = render_notice(kind, context, preferred_locales=locales)
            except ValueError as error:
                # An overridden template or odd facts: shown here, as the outbox would fail it.
                shown["error"] = f"cannot be written: {error}"
            notices.append(shown)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Customer notices for {account.stripe_customer_id}",
            "account": account,
            "customer_language": choose_language(account.preferred_locales),
            "chosen": chosen,
            "form": form,
            # Quick switches for the languages the messages are written in; any can be typed.
            "offered_languages": [code for code, _name in settings.LANGUAGES],
            "notices": notices,
            "now": now,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/dunning/customernotice/preview.html", context)
