"""The features an account can have. What each consequence level takes away is part of
the ladder's rung table (`dunning.policy`); core access is the last thing to go."""

PREMIUM_FEATURES = "premium_features"
UPGRADED_FEATURES = "upgraded_features"
WRITE_ACCESS = "write_access"
CORE_ACCESS = "core_access"

# Every feature an account can have, mildest restriction first.
FEATURES = (UPGRADED_FEATURES, PREMIUM_FEATURES, WRITE_ACCESS, CORE_ACCESS)
