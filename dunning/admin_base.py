"""The base of every read-only support admin: rows the engine writes are viewed, never edited.

Every dunning row is written by the engine (`dunning.apply`), so every admin here is
read-only. Views need the `support_read` or `support_actions` group (or a superuser, or the
model's view permission); see `dunning.support_api.permissions`.
"""

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from dunning.support_api.permissions import can_read


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
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))
