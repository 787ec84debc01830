"""What each consequence level takes away. Core access is the last thing to go."""

PREMIUM_FEATURES = "premium_features"
UPGRADED_FEATURES = "upgraded_features"
WRITE_ACCESS = "write_access"
CORE_ACCESS = "core_access"

# Every feature an account can have, mildest restriction first.
FEATURES = (UPGRADED_FEATURES, PREMIUM_FEATURES, WRITE_ACCESS, CORE_ACCESS)

RESTRICTIONS_BY_LEVEL: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "notice": frozenset(),
    "upgrade_restricted": frozenset({UPGRADED_FEATURES}),
    "premium_restricted": frozenset({PREMIUM_FEATURES}),
    "read_only": frozenset({PREMIUM_FEATURES, WRITE_ACCESS}),
    "suspended": frozenset({PREMIUM_FEATURES, WRITE_ACCESS, CORE_ACCESS}),
    "cancelled": frozenset({PREMIUM_FEATURES, WRITE_ACCESS, CORE_ACCESS}),
}


def restrictions_for_level(level: str) -> frozenset[str]:
    return RESTRICTIONS_BY_LEVEL[level]
