from django.db import models


class Restriction(models.Model):
    """Store 4: a restriction in force on an account, and why."""

    account = models.ForeignKey(
        "billing_events.Account", on_delete=models.CASCADE, related_name="restrictions"
    )
    code = models.CharField(max_length=64, help_text="what is restricted, e.g. premium_features")
    reason = models.CharField(max_length=255)
    level = models.CharField(max_length=32, help_text="the ladder level that imposed it")
    since = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "code"], name="one_restriction_per_code")
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.level})"
