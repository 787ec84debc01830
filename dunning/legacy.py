"""The legacy setup's verdicts on go-live day, and the "day one" comparison with the engine.

Legacy had two binary flags (bad_debt, banned). The comparison lists the accounts the legacy
flags as bad debt that the engine would not put in bad debt, and the reverse, each with the
engine's own explanation, so the difference can be reviewed before enforcement starts.
"""

import csv
from collections.abc import Iterable
from datetime import UTC, datetime

from django.db import transaction

from billing_events.models import Account
from core import clock
from dunning.models import OPEN_STATES, CaseState, DunningCase, LegacyVerdict

TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"0", "false", "no", "n", "f", ""}
COLUMNS = ("customer_id", "bad_debt", "banned", "since")


class LegacyFileError(ValueError):
    pass


def _flag(value: str, line: int, column: str) -> bool:
    text = (value or "").strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise LegacyFileError(f"line {line}: {column} is {value!r}, not a yes/no flag")


def _since(value: str, line: int) -> datetime | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise LegacyFileError(f"line {line}: since {value!r} is not an ISO date") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_rows(rows: Iterable[dict]) -> list[dict]:
    """Validated verdicts from CSV rows (header: customer_id,bad_debt,banned,since). Pure."""
    verdicts: dict[str, dict] = {}
    for line, row in enumerate(rows, start=2):
        customer = (row.get("customer_id") or "").strip()
        if not customer.startswith("cus_"):
            raise LegacyFileError(f"line {line}: customer_id {customer!r} is not a Stripe id")
        verdicts[customer] = {
            "stripe_customer_id": customer,
            "bad_debt": _flag(row.get("bad_debt", ""), line, "bad_debt"),
            "banned": _flag(row.get("banned", ""), line, "banned"),
            "since": _since(row.get("since", ""), line),
        }
    return list(verdicts.values())


def import_legacy_file(path: str) -> dict[str, int]:
    """Store the file's verdicts (all or none); a second import of the same file changes
    nothing. Returns counts of created, updated and unchanged rows."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise LegacyFileError(f"missing columns: {', '.join(sorted(missing))}")
        verdicts = parse_rows(reader)
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    now = clock.now()
    with transaction.atomic():
        existing = {
            row.stripe_customer_id: row
            for row in LegacyVerdict.objects.filter(
                stripe_customer_id__in=[v["stripe_customer_id"] for v in verdicts]
            )
        }
        for verdict in verdicts:
            row = existing.get(verdict["stripe_customer_id"])
            if row is None:
                LegacyVerdict.objects.create(**verdict, source=path, imported_at=now)
                counts["created"] += 1
            elif any(getattr(row, key) != value for key, value in verdict.items()):
                for key, value in verdict.items():
                    setattr(row, key, value)
                row.source, row.imported_at = path, now
                row.save()
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
    return counts


def _engine_verdicts(customer_ids: set[str] | None) -> dict[str, DunningCase]:
    """The open case per customer (the engine's current verdict)."""
    cases = DunningCase.objects.filter(state__in=OPEN_STATES).select_related(
        "account", "last_decision"
    )
    if customer_ids is not None:
        cases = cases.filter(account__stripe_customer_id__in=customer_ids)
    return {case.account.stripe_customer_id: case for case in cases}


def _row(customer: str, legacy: LegacyVerdict | None, case: DunningCase | None) -> dict:
    decision = case.last_decision if case else None
    return {
        "stripe_customer_id": customer,
        "account_id": case.account_id if case else _account_id(customer),
        "legacy": {
            "bad_debt": legacy.bad_debt if legacy else False,
            "banned": legacy.banned if legacy else False,
            "since": legacy.since if legacy else None,
        },
        "engine": {
            "bad_debt": bool(case and case.state == CaseState.ESCALATED),
            "state": case.state if case else "no open case",
            "level": case.level if case else "none",
            "summary": decision.summary if decision else "no failed payment in the mirror",
            "explanation": decision.explanation if decision else {},
        },
    }


def _account_id(customer: str) -> int | None:
    return Account.objects.filter(stripe_customer_id=customer).values_list("pk", flat=True).first()


def day_one(limit: int = 500) -> dict:
    """Where the legacy flags and the engine disagree about bad debt."""
    legacy = {row.stripe_customer_id: row for row in LegacyVerdict.objects.all()}
    flagged = {customer for customer, row in legacy.items() if row.bad_debt}
    cases = _engine_verdicts(None)
    engine_bad = {customer for customer, case in cases.items() if case.state == CaseState.ESCALATED}
    only_legacy = sorted(flagged - engine_bad)
    only_engine = sorted(engine_bad - flagged)
    return {
        "legacy_verdicts": len(legacy),
        "legacy_bad_debt": len(flagged),
        "engine_bad_debt": len(engine_bad),
        "agree": len(flagged & engine_bad),
        "legacy_only": [_row(c, legacy.get(c), cases.get(c)) for c in only_legacy[:limit]],
        "engine_only": [_row(c, legacy.get(c), cases.get(c)) for c in only_engine[:limit]],
    }
