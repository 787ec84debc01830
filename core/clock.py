"""The project clock: every read of "now" in the service goes through `now()`.

In production it is the system clock. With DUNNING_TEST_CLOCK=1 a test clock stored in
PostgreSQL (so web, worker and beat agree) can be set and advanced, the way Stripe test
clocks work; until it is set, it reads the system clock. The stored clock belongs to the
dunning app, which hands its reader over at start-up (`read_test_clock_with`), so this
module, used by every app, imports none of them.
"""

from collections.abc import Callable
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone

_test_clock_reader: Callable[[], datetime | None] | None = None


def read_test_clock_with(reader: Callable[[], datetime | None]) -> None:
    """Install the function that returns the stored test clock (None until it is set)."""
    global _test_clock_reader  # set once, at app start-up
    _test_clock_reader = reader


def now() -> datetime:
    if settings.DUNNING_TEST_CLOCK and _test_clock_reader is not None:
        frozen = _test_clock_reader()
        if frozen is not None:
            return frozen
    return timezone.now()


def from_unix(seconds: int | float | None) -> datetime | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)
