"""Support roles, as Django groups.

- `support_read`: the GET endpoints (and viewing dunning rows in the admin);
- `support_actions`: also the actions (recompute, pause dunning, extend grace).

Superusers can do everything. The admin uses the same checks, so a role means the same
thing in NinjaPanel and in /admin/.
"""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

SUPPORT_READ = "support_read"
SUPPORT_ACTIONS = "support_actions"


def _support_groups(user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    """The user's support groups, read once per request (cached on the user object)."""
    cached = getattr(user, "_support_groups", None)
    if cached is None:
        cached = frozenset(
            user.groups.filter(name__in=[SUPPORT_READ, SUPPORT_ACTIONS]).values_list(
                "name", flat=True
            )
        )
        user._support_groups = cached
    return cached


def can_read(user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or bool(_support_groups(user))


def can_act(user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or SUPPORT_ACTIONS in _support_groups(user)


class SupportRole(BasePermission):
    """Reads need a support role; anything else needs `support_actions`."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS:
            self.message = f"This needs the '{SUPPORT_READ}' or '{SUPPORT_ACTIONS}' role."
            return can_read(request.user)
        self.message = f"This needs the '{SUPPORT_ACTIONS}' role."
        return can_act(request.user)
