"""The project clock: every read of "now" in the service goes through `now()`.

In production it is the system clock. With DUNNING_TEST_CLOCK=1 a test clock stored in
PostgreSQL (so web, worker and beat agree) can be set and advanced, the way Stripe test
clocks work; until it is set, it reads the system clock.
"""

from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone


def now() -> datetime:
    if settings.DUNNING_TEST_CLOCK:
        from dunning.models import TestClock

        frozen = TestClock.objects.filter(pk=TestClock.SINGLETON).values_list("now", flat=True)
        for value in frozen:
            return value
    return timezone.now()


def from_unix(seconds: int | float | None) -> datetime | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)
