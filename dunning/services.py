"""The dunning service API other apps call."""

from dunning.triggers import Trigger


def handle(trigger: Trigger) -> None:
    """The one handler for every trigger. The recompute engine (issue #3) lands here;
    until then a trigger is accepted and changes nothing."""
    return None
