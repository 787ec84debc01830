"""The entitlements service API: read and set the restrictions in force on an account."""

from datetime import datetime

from entitlements.models import Restriction
from entitlements.policy import FEATURES


def restrictions_in_force(*, account_id: int) -> dict[str, str]:
    """Restriction code -> the level that imposed it."""
    return dict(Restriction.objects.filter(account_id=account_id).values_list("code", "level"))


def set_restrictions(
    *, account_id: int, desired: dict[str, str], reason: str, now: datetime
) -> None:
    """Make the restrictions in force exactly `desired` (code -> level), writing only
    what differs."""
    current = restrictions_in_force(account_id=account_id)
    lifted = [code for code in current if code not in desired]
    if lifted:
        Restriction.objects.filter(account_id=account_id, code__in=lifted).delete()
    for code, level in desired.items():
        if code not in current:
            Restriction.objects.create(
                account_id=account_id, code=code, level=level, reason=reason, since=now
            )
        elif current[code] != level:
            Restriction.objects.filter(account_id=account_id, code=code).update(
                level=level, reason=reason
            )


def effective_entitlements(*, account_id: int) -> dict:
    """What the account may use now, and each restriction in force with its reason."""
    restrictions = list(
        Restriction.objects.filter(account_id=account_id)
        .order_by("since", "code")
        .values("code", "level", "reason", "since")
    )
    restricted = {r["code"] for r in restrictions}
    return {
        "features": [feature for feature in FEATURES if feature not in restricted],
        "restrictions": restrictions,
    }
