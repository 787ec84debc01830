"""The JSON Schema of a policy document (`dunning.policy_document`).

Durations are plain numbers whose unit is in the key's name (`_days`, `_hours`), so a
document reads and diffs as what it means: `"starts_after_days": 7`.
"""

from dunning.policy import DeclineClass, Level, Track
from entitlements.policy import FEATURES

FORMAT = 1  # bumped when the document's shape changes; parsing refuses other formats

STANDINGS = ["good", "past_due", "restricted", "suspended", "cancelled"]
SCHEDULE_CLASSES = [DeclineClass.SOFT.value, "unknown"]  # the others wait for the customer
NETWORK_CAPS = ["visa_30d", "mastercard_24h", "mastercard_30d"]

_days = {"type": "number", "minimum": 0, "maximum": 3650}
_hours = {"type": "number", "minimum": 0, "maximum": 24 * 3650}
_factor = {"type": "number", "exclusiveMinimum": 0, "maximum": 10}
_schedule = {"type": "array", "items": {**_days, "exclusiveMinimum": 0}, "maxItems": 50}

RUNG = {
    "type": "object",
    "additionalProperties": False,
    "required": ["level", "starts_after_days", "min_dwell_days", "standing", "restricts"],
    "properties": {
        "level": {"enum": [level.value for level in Level if level != Level.NONE]},
        "starts_after_days": _days,
        "min_dwell_days": _days,
        "standing": {"enum": STANDINGS},
        "restricts": {"type": "array", "items": {"enum": list(FEATURES)}, "uniqueItems": True},
        "bad_debt": {"type": "boolean"},
        "cancels": {"type": "boolean"},
        "reverts_upgrade": {"type": "boolean"},
    },
}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Dunning policy",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "format",
        "decline_classes",
        "unknown_decline_class",
        "retries",
        "network_caps",
        "ladders",
        "severity",
        "notices",
    ],
    "properties": {
        "format": {"const": FORMAT},
        # Every known decline code and its class (the shipped CSV with any overrides).
        "decline_classes": {
            "type": "object",
            "propertyNames": {"pattern": "^[a-z0-9_]{1,64}$"},
            "additionalProperties": {"enum": [c.value for c in DeclineClass]},
        },
        "unknown_decline_class": {"enum": [c.value for c in DeclineClass]},
        "retries": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "schedules_days",
                "min_gap_hours",
                "card_attempt_window_days",
                "unknown_class_wait_hours",
            ],
            "properties": {
                "schedules_days": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {name: _schedule for name in SCHEDULE_CLASSES},
                },
                "min_gap_hours": _hours,
                "card_attempt_window_days": {**_days, "minimum": 30},
                "unknown_class_wait_hours": _hours,
            },
        },
        # The card networks' caps in force: stricter than the networks' own only.
        "network_caps": {
            "type": "object",
            "additionalProperties": False,
            "required": NETWORK_CAPS,
            "properties": {name: {"type": "integer", "minimum": 1} for name in NETWORK_CAPS},
        },
        "ladders": {
            "type": "object",
            "additionalProperties": False,
            "required": [track.value for track in Track],
            "properties": {
                track.value: {"type": "array", "items": RUNG, "minItems": 2, "maxItems": 10}
                for track in Track
            },
        },
        "severity": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "good_payer_min_paid",
                "good_payer_factor",
                "fraud_factor",
                "memory_days",
                "small_amount_minor",
            ],
            "properties": {
                "good_payer_min_paid": {"type": "integer", "minimum": 1, "maximum": 1000},
                "good_payer_factor": _factor,
                "fraud_factor": _factor,
                "memory_days": {**_days, "minimum": 1},
                "small_amount_minor": {"type": "integer", "minimum": 0},
            },
        },
        "notices": {
            "type": "object",
            "additionalProperties": False,
            "required": ["step_lead_days", "final_lead_days", "card_expiry_lead_days"],
            "properties": {
                "step_lead_days": _days,
                "final_lead_days": _days,
                "card_expiry_lead_days": {
                    "type": "array",
                    "items": {**_days, "exclusiveMinimum": 0},
                    "maxItems": 5,
                    "uniqueItems": True,
                },
            },
        },
    },
}
