"""The support admin for dunning: read everything, change nothing behind the engine's back.

Django's autodiscovery imports this module; each admin module registers its own models.
"""

from dunning import (  # noqa: F401
    case_admin,
    notice_admin,
    policy_admin,
    record_admin,
    rollout_admin,
)
