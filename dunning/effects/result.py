from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class EffectResult:
    """What one side effect came to. `retryable`: try again later with the same key."""

    ok: bool
    retryable: bool = False
    detail: str = ""
    data: dict = field(default_factory=dict)
    # Not a failure: the item must wait for another one first (ordering), or its day.
    defer: bool = False
    defer_until: datetime | None = None
