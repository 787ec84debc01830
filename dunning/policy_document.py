"""The policy as one JSON document: export, validation and parsing back to a `Policy`.

`policy_from_document(policy_to_document(p), version=p.version) == p` for the code default
(tested), so a stored version is exactly the policy the engine runs. Validation is the JSON
Schema (`dunning.policy_schema`) and then the rules a schema cannot say (the ladder climbs,
the upgrade track never costs the base plan, caps stay within the networks' limits); every
error names the document path it is about, e.g. `ladders.base[2].starts_after_days`.
"""

import math
from dataclasses import dataclass
from datetime import timedelta

from jsonschema import Draft202012Validator

from dunning.network_rules import DEFAULT_NETWORK_RULES, NetworkRules
from dunning.policy import (
    LADDER_ORDER,
    DeclineClass,
    Level,
    NoticeRules,
    Policy,
    RetryRules,
    Rung,
    SeverityRules,
    Track,
)
from dunning.policy_schema import FORMAT, SCHEMA
from entitlements.policy import UPGRADED_FEATURES

_VALIDATOR = Draft202012Validator(SCHEMA)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)


@dataclass(frozen=True)
class PolicyError:
    path: str  # where in the document, e.g. "ladders.base[2].starts_after_days"
    message: str

    def as_dict(self) -> dict:
        return {"path": self.path, "message": self.message}


class InvalidPolicy(ValueError):
    def __init__(self, errors: list[PolicyError]):
        self.errors = errors
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))


def path_text(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _num(span: timedelta, unit: timedelta) -> int | float:
    value = span / unit
    return int(value) if value == int(value) else value


def policy_to_document(policy: Policy) -> dict:
    """The whole policy as plain JSON (the version label is the store's, not the document's)."""
    network = policy.network_rules or DEFAULT_NETWORK_RULES
    return {
        "format": FORMAT,
        "decline_classes": {code: str(cls) for code, cls in sorted(policy.decline_classes.items())},
        "unknown_decline_class": str(policy.unknown_decline_class),
        "retries": {
            "schedules_days": {
                str(name): [_num(offset, DAY) for offset in offsets]
                for name, offsets in policy.retries.schedules.items()
            },
            "min_gap_hours": _num(policy.retries.min_gap, HOUR),
            "card_attempt_window_days": _num(policy.retries.card_attempt_window, DAY),
            "unknown_class_wait_hours": _num(policy.retries.unknown_class_wait, HOUR),
        },
        "network_caps": {cap.name: cap.limit for cap in network.caps},
        "ladders": {
            str(track): [_rung_document(rung) for rung in rungs]
            for track, rungs in policy.ladders.items()
        },
        "severity": {
            "good_payer_min_paid": policy.severity.good_payer_min_paid,
            "good_payer_factor": policy.severity.good_payer_factor,
            "fraud_factor": policy.severity.fraud_factor,
            "memory_days": _num(policy.severity.memory, DAY),
            "small_amount_minor": policy.severity.small_amount_minor,
        },
        "notices": {
            "step_lead_days": _num(policy.notices.step_lead, DAY),
            "final_lead_days": _num(policy.notices.final_lead, DAY),
            "card_expiry_lead_days": [_num(s, DAY) for s in policy.notices.card_expiry_leads],
        },
    }


def _rung_document(rung: Rung) -> dict:
    return {
        "level": str(rung.level),
        "starts_after_days": _num(rung.starts_after, DAY),
        "min_dwell_days": _num(rung.min_dwell, DAY),
        "standing": rung.standing,
        "restricts": sorted(rung.restricts),
        "bad_debt": rung.bad_debt,
        "cancels": rung.cancels,
        "reverts_upgrade": rung.reverts_upgrade,
    }


def validate_document(document: object) -> list[PolicyError]:
    """Every problem with the document, schema first; an empty list means it is valid."""
    if not_finite := _non_finite_numbers(document):
        return [PolicyError(path, "must be a finite number") for path in not_finite]
    errors = [
        PolicyError(path_text(error.absolute_path), error.message)
        for error in sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(e.path))
    ]
    if errors:
        return errors
    return _ladder_errors(document["ladders"]) + _other_errors(document)


def _non_finite_numbers(value: object, path: str = "") -> list[str]:
    # JSON Schema's minimum/maximum let NaN through (every comparison with it is false),
    # and PostgreSQL's json type refuses it: caught here, as a 400 naming the path.
    if isinstance(value, float) and not math.isfinite(value):
        return [path or "(document)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite_numbers(v, _join(path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite_numbers(v, f"{path}[{i}]")]
    return []


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _ladder_errors(ladders: dict) -> list[PolicyError]:
    errors: list[PolicyError] = []
    seen: dict[str, tuple[str, dict]] = {}
    for track, rungs in ladders.items():
        ends = "reverts_upgrade" if track == Track.UPGRADE else "cancels"
        for index, rung in enumerate(rungs):
            at = f"ladders.{track}[{index}]"
            if index == 0 and (rung["level"] != Level.NOTICE or rung["starts_after_days"] != 0):
                errors.append(PolicyError(at, "a ladder starts with notice at 0 days"))
            if index > 0:
                below = rungs[index - 1]
                if LADDER_ORDER.index(Level(rung["level"])) <= LADDER_ORDER.index(
                    Level(below["level"])
                ):
                    errors.append(PolicyError(f"{at}.level", "levels must climb, mildest first"))
                if rung["starts_after_days"] < below["starts_after_days"]:
                    errors.append(
                        PolicyError(
                            f"{at}.starts_after_days", "a rung cannot start before the one below"
                        )
                    )
            last = index == len(rungs) - 1
            for end in ("cancels", "reverts_upgrade"):
                if rung.get(end, False) != (last and end == ends):
                    wanted = "must" if last and end == ends else "must not"
                    errors.append(PolicyError(f"{at}.{end}", f"this rung {wanted} end the ladder"))
            costs_base = rung.get("bad_debt") or set(rung["restricts"]) - {UPGRADED_FEATURES}
            if track == Track.UPGRADE and costs_base:
                errors.append(
                    PolicyError(
                        at,
                        "an unpaid upgrade never opens bad debt and only "
                        "restricts upgraded_features",
                    )
                )
            previous = seen.setdefault(rung["level"], (at, rung))
            if previous[1] != rung:
                errors.append(
                    PolicyError(
                        at,
                        f"level {rung['level']} differs from {previous[0]}: a level "
                        "means the same on every track",
                    )
                )
    return errors


def _other_errors(document: dict) -> list[PolicyError]:
    errors: list[PolicyError] = []
    for name, offsets in document["retries"]["schedules_days"].items():
        if list(offsets) != sorted(set(offsets)):
            errors.append(
                PolicyError(f"retries.schedules_days.{name}", "offsets must strictly increase")
            )
    for name, limit in document["network_caps"].items():
        try:
            DEFAULT_NETWORK_RULES.with_overrides({name: limit})
        except ValueError as error:
            errors.append(PolicyError(f"network_caps.{name}", str(error)))
    return errors


def policy_from_document(document: dict, *, version: str) -> Policy:
    """The Policy a valid document describes; raises InvalidPolicy otherwise."""
    errors = validate_document(document)
    if errors:
        raise InvalidPolicy(errors)
    retries, severity, notices = document["retries"], document["severity"], document["notices"]
    return Policy(
        version=version,
        decline_classes={c: DeclineClass(v) for c, v in document["decline_classes"].items()},
        unknown_decline_class=DeclineClass(document["unknown_decline_class"]),
        ladders={
            Track(track): tuple(_rung(rung) for rung in rungs)
            for track, rungs in document["ladders"].items()
        },
        retries=RetryRules(
            schedules={
                (DeclineClass(name) if name == DeclineClass.SOFT else name): tuple(
                    timedelta(days=day) for day in offsets
                )
                for name, offsets in retries["schedules_days"].items()
            },
            min_gap=timedelta(hours=retries["min_gap_hours"]),
            card_attempt_window=timedelta(days=retries["card_attempt_window_days"]),
            unknown_class_wait=timedelta(hours=retries["unknown_class_wait_hours"]),
        ),
        severity=SeverityRules(
            good_payer_min_paid=severity["good_payer_min_paid"],
            good_payer_factor=float(severity["good_payer_factor"]),
            fraud_factor=float(severity["fraud_factor"]),
            memory=timedelta(days=severity["memory_days"]),
            small_amount_minor=severity["small_amount_minor"],
        ),
        network_rules=_network(document["network_caps"]),
        notices=NoticeRules(
            step_lead=timedelta(days=notices["step_lead_days"]),
            final_lead=timedelta(days=notices["final_lead_days"]),
            card_expiry_leads=tuple(
                sorted((timedelta(days=d) for d in notices["card_expiry_lead_days"]), reverse=True)
            ),
        ),
    )


def _network(caps: dict) -> NetworkRules:
    # The never-retry codes and advice waits are the networks' own rules, not a choice.
    return DEFAULT_NETWORK_RULES.with_overrides(caps)


def _rung(rung: dict) -> Rung:
    return Rung(
        level=Level(rung["level"]),
        starts_after=timedelta(days=rung["starts_after_days"]),
        min_dwell=timedelta(days=rung["min_dwell_days"]),
        standing=rung["standing"],
        restricts=frozenset(rung["restricts"]),
        bad_debt=rung.get("bad_debt", False),
        cancels=rung.get("cancels", False),
        reverts_upgrade=rung.get("reverts_upgrade", False),
    )


def diff_documents(old: dict, new: dict) -> list[dict]:
    """Every changed path, old value to new: dicts by key, rungs by position, any other
    list as one value (a schedule reads better whole)."""
    changes: list[dict] = []
    _diff(old, new, [], changes)
    return changes


_MISSING = object()


def _diff(old: object, new: object, at: list, out: list[dict]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            _diff(old.get(key, _MISSING), new.get(key, _MISSING), [*at, key], out)
    elif _rungs(old) and _rungs(new):
        for index in range(max(len(old), len(new))):
            left = old[index] if index < len(old) else _MISSING
            right = new[index] if index < len(new) else _MISSING
            _diff(left, right, [*at, index], out)
    elif old != new:
        out.append(
            {
                "path": path_text(at),
                "old": None if old is _MISSING else old,
                "new": None if new is _MISSING else new,
            }
        )


def _rungs(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def diff_lines(changes: list[dict]) -> list[str]:
    return [f"{c['path']}: {_show(c['old'])} → {_show(c['new'])}" for c in changes]


def _show(value: object) -> str:
    if value is None:
        return "(absent)"
    return str(value).lower() if isinstance(value, bool) else str(value)
