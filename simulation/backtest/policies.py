"""The two policies a backtest compares, read from the configured database without writing
to it: the active one (the stored active version, else the code default that would become
version 1), and the candidate (a JSON document file, or a stored version's number)."""

import json
from pathlib import Path

from dunning.models import PolicyVersion
from dunning.policy import current_policy
from dunning.policy_document import policy_to_document, validate_document


class BacktestError(ValueError):
    """The backtest cannot run as asked; the message says why."""


def active_document() -> tuple[dict, str]:
    row = PolicyVersion.objects.filter(active=True).values_list("label", "document").first()
    if row is None:
        return policy_to_document(current_policy()), "the code default (no version stored)"
    return row[1], f"stored version {row[0]} (active)"


def candidate_document(policy: str) -> tuple[dict, str]:
    """`policy` is a stored version's number, or the path of a JSON policy document."""
    if policy.isdigit():
        row = PolicyVersion.objects.filter(number=int(policy)).values_list("label", "document")
        found = row.first()
        if found is None:
            raise BacktestError(f"no stored policy version {policy}")
        return found[1], f"stored version {found[0]}"
    path = Path(policy)
    if not path.is_file():
        raise BacktestError(f"--policy {policy}: neither a version number nor a file")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BacktestError(f"{path}: not a JSON document ({error})") from error
    errors = validate_document(document)
    if errors:
        listed = "; ".join(f"{e.path}: {e.message}" for e in errors)
        raise BacktestError(f"{path}: not a valid policy document: {listed}")
    return document, f"the document {path}"
