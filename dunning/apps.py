from datetime import datetime

from django.apps import AppConfig


def stored_test_clock() -> datetime | None:
    """The shared test clock's time, or None until one is set."""
    from dunning.models import TestClock

    frozen = TestClock.objects.filter(pk=TestClock.SINGLETON).values_list("now", flat=True)
    return next(iter(frozen), None)


class DunningConfig(AppConfig):
    name = "dunning"

    def ready(self) -> None:
        from core import clock

        clock.read_test_clock_with(stored_test_clock)
        from dunning import snapshot_rows
        from dunning.effects.registry import REGISTRY

        snapshot_rows.fold_effects_with(REGISTRY)
        # Other modules publish these tasks by name (no import, so no import circle); a
        # process running tasks in-process must have them registered to run them at all.
        from dunning import tasks  # noqa: F401
        from dunning.intake import tasks as intake_tasks  # noqa: F401
