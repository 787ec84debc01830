"""The dunning service API other apps call."""

from dunning.engine import Outcome, handle
from dunning.triggers import Trigger, TriggerKind

__all__ = ["Outcome", "Trigger", "TriggerKind", "handle"]
