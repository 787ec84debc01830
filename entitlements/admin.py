"""Restrictions in force, read-only: the engine sets them (`entitlements.services`)."""

from django.contrib import admin

from core.admin import SupportReadOnlyAdmin
from entitlements.models import Restriction


@admin.register(Restriction)
class RestrictionAdmin(SupportReadOnlyAdmin):
    list_display = ("account", "code", "level", "since", "short_reason")
    list_select_related = ("account",)
    list_filter = ("code", "level")
    search_fields = ("account__stripe_customer_id",)
    date_hierarchy = "since"
    ordering = ("-since", "-pk")

    @admin.display(description="reason")
    def short_reason(self, restriction: Restriction) -> str:
        return restriction.reason[:100]
