"""The read-only admin base for rows an engine writes: support roles may view them,
nobody adds, changes or deletes them in the admin (each app's actions call its services)."""

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from core.permissions import can_read


class ReadOnlyForSupport:
    """Rows the engine writes: no add, change or delete; support roles may view them."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return can_read(request.user) or super().has_view_permission(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return can_read(request.user) or super().has_module_permission(request)


class SupportReadOnlyAdmin(ReadOnlyForSupport, admin.ModelAdmin):
    pass


def pretty_json(value: object) -> str:
    """A JSON value as an indented, escaped <pre> block for a read-only admin field."""
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))
