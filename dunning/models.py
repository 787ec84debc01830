from django.db import models


class TestClock(models.Model):
    """The one shared test clock (only read when DUNNING_TEST_CLOCK=1)."""

    SINGLETON = 1

    now = models.DateTimeField()

    def __str__(self) -> str:
        return self.now.isoformat()
