from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    """One rule that fired: its name, the facts it read, what it concluded. Decisions keep
    these so support can read why ("level 2 because ...")."""

    name: str
    conclusion: str
    facts: dict = field(default_factory=dict)
