"""What the webhook ingest checks before it stores anything.

A validly signed body is still untrusted input: whatever the ingest accepts with a 2xx,
processing must be able to store and handle, or Stripe's event ends `dead` after days of
retries. So the ingest rejects with 400 (and stores nothing) any body that is not strict
UTF-8 JSON of bounded depth, any envelope field that does not fit its column, and any fact
that `normalize.parse_event` draws from the object that would not fit the mirror stores.

The checks are cheap on the hot path: one parse, a walk over the parsed containers (not
the leaves) for the depth, and a walk over the handful of fields of one fact.
"""

import json
import math
import re
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from django.db import models

from billing_events.facts import (
    AttemptFact,
    CustomerFact,
    InvoiceFact,
    PaymentMethodFact,
    SubscriptionFact,
)
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription, WebhookEvent


class Rejected(ValueError):
    """The body cannot be accepted; the message is the reason given to the sender."""


# Stripe's deepest objects nest about eight levels; far below the recursion limit, so a
# parse in a worker's deeper stack can never hit it either. Most events have fewer
# brackets than this in all, which settles the depth without a walk.
MAX_JSON_DEPTH = 64

# Event `created` must be a plausible Stripe timestamp; object timestamps may be 0 (a
# missing field parses to the epoch) but must stay far from datetime's limits, which the
# engine's date arithmetic would cross.
EVENT_CREATED_RANGE = (
    int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()),
    int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()),
)
FACT_TIME_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))

UTF8_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LENGTH = 255
# NUL cannot be stored in PostgreSQL text; lone surrogates cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CURRENCY = re.compile(r"[a-z]{3}")


# --- the body -----------------------------------------------------------------------------
def decode_body(payload: bytes) -> str:
    """Strict UTF-8 without a BOM: what Stripe sends, and what the text column can hold."""
    if payload.startswith(UTF8_BOM):
        raise Rejected("payload must be UTF-8 JSON without a byte order mark")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("payload is not valid UTF-8") from None


def nesting_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests arrays and objects deeper than `limit`. Level by level,
    looking only at containers: cheaper than a string-aware scan of the raw bytes."""
    level = [value] if type(value) in (dict, list) else []
    for _ in range(limit):
        level = [
            child
            for container in level
            for child in (container.values() if type(container) is dict else container)
            if type(child) in (dict, list)
        ]
        if not level:
            return False
    return bool(level)


def _no_constant(name: str) -> Any:
    raise Rejected(f"payload is not strict JSON: {name} is not a number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Rejected(f"payload has a number out of range: {text[:32]}")
    return value


def loads_strict(raw: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> tuple[str, Any]:
    """Strict JSON: UTF-8 without a BOM, no NaN/Infinity, finite numbers, bounded depth.
    Returns the text and the parsed value; raises Rejected with the reason."""
    text = decode_body(raw)
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except Rejected:
        raise
    except RecursionError:
        raise Rejected(f"payload nests deeper than {max_depth} levels") from None
    except ValueError:
        raise Rejected("payload is not valid JSON") from None
    # A body that parses here, near the recursion limit, could still fail in a worker's
    # deeper stack: the bound is far below it.
    if raw.count(b"[") + raw.count(b"{") > max_depth and nesting_exceeds(value, max_depth):
        raise Rejected(f"payload nests deeper than {max_depth} levels")
    return text, value


# --- text ---------------------------------------------------------------------------------
def text_problem(value: str, *, max_length: int) -> str | None:
    if len(value) > max_length:
        return f"is longer than {max_length} characters"
    if "\x00" in value or (not value.isascii() and _UNSTORABLE.search(value)):
        return "contains NUL or an unpaired surrogate"
    return None


# --- the envelope -------------------------------------------------------------------------
def _max_length(model: type[models.Model], name: str) -> int:
    return model._meta.get_field(name).max_length or DEFAULT_MAX_LENGTH


EVENT_ID_MAX = _max_length(WebhookEvent, "stripe_event_id")
EVENT_TYPE_MAX = _max_length(WebhookEvent, "type")


def envelope_problem(event: object) -> str | None:
    """Why the event envelope cannot be stored, or None."""
    if not isinstance(event, dict):
        return "event must be a JSON object"
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        return "event id must be a string starting with evt_"
    if problem := text_problem(event_id, max_length=EVENT_ID_MAX):
        return f"event id {problem}"
    event_type = event.get("type")
    if not isinstance(event_type, str) or not event_type:
        return "event type must be a non-empty string"
    if problem := text_problem(event_type, max_length=EVENT_TYPE_MAX):
        return f"event type {problem}"
    created = event.get("created")
    low, high = EVENT_CREATED_RANGE
    if isinstance(created, bool) or not isinstance(created, int) or created <= 0:
        return "event created must be a positive unix timestamp"
    if not low <= created < high:
        return "event created must be a unix timestamp between 2000 and 2100"
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return "event data.object must be an object"
    return None


# --- the fact -----------------------------------------------------------------------------
_CUSTOMER = (Account, "stripe_customer_id")
# Where each fact field ends up (or is looked up): its column's limits apply.
COLUMNS: dict[type, dict[str, tuple[type[models.Model], str]]] = {
    InvoiceFact: {
        "stripe_invoice_id": (Invoice, "stripe_invoice_id"),
        "customer_id": _CUSTOMER,
        "subscription_id": (Invoice, "stripe_subscription_id"),
        "status": (Invoice, "status"),
        "amount_due": (Invoice, "amount_due"),
        "amount_paid": (Invoice, "amount_paid"),
        "amount_remaining": (Invoice, "amount_remaining"),
        "currency": (Invoice, "currency"),
        "billing_reason": (Invoice, "billing_reason"),
        "attempt_count": (Invoice, "attempt_count"),
        "charge_id": (PaymentAttempt, "stripe_charge_id"),
        "payment_intent_id": (PaymentAttempt, "stripe_payment_intent_id"),
    },
    AttemptFact: {
        "attempt_key": (PaymentAttempt, "attempt_key"),
        "customer_id": _CUSTOMER,
        "invoice_id": (PaymentAttempt, "stripe_invoice_id"),
        "charge_id": (PaymentAttempt, "stripe_charge_id"),
        "payment_intent_id": (PaymentAttempt, "stripe_payment_intent_id"),
        **{
            name: (PaymentAttempt, name)
            for name in (
                "payment_method",
                "outcome",
                "amount",
                "currency",
                "decline_code",
                "failure_code",
                "advice_code",
                "network_advice_code",
                "network_decline_code",
            )
        },
    },
    SubscriptionFact: {
        "stripe_subscription_id": (Subscription, "stripe_subscription_id"),
        "customer_id": _CUSTOMER,
        "status": (Subscription, "status"),
    },
    CustomerFact: {
        "customer_id": _CUSTOMER,
        "email": (Account, "email"),
        "default_payment_method": (Account, "default_payment_method"),
    },
    PaymentMethodFact: {"customer_id": _CUSTOMER},
}
# The identity of the row a fact merges into: an empty one would merge unrelated objects.
REQUIRED = frozenset({"customer_id", "stripe_invoice_id", "attempt_key", "stripe_subscription_id"})
BIGINT = (-(2**63), 2**63 - 1)
INT_RANGES: dict[type, tuple[int, int]] = {
    models.BigIntegerField: BIGINT,
    models.PositiveIntegerField: (0, 2**31 - 1),
    models.PositiveSmallIntegerField: (0, 2**15 - 1),
    models.IntegerField: (-(2**31), 2**31 - 1),
}


@cache
def _text_limit(fact_type: type, name: str) -> int:
    column = COLUMNS.get(fact_type, {}).get(name)
    return _max_length(*column) if column else DEFAULT_MAX_LENGTH


@cache
def _int_range(fact_type: type, name: str) -> tuple[int, int]:
    column = COLUMNS.get(fact_type, {}).get(name)
    if column is None:
        return BIGINT
    field = column[0]._meta.get_field(column[1])
    return next((r for kind, r in INT_RANGES.items() if type(field) is kind), BIGINT)


@cache
def _field_names(fact_type: type) -> tuple[str, ...]:
    return tuple(field.name for field in fields(fact_type))


def _value_problem(fact_type: type, name: str, value: Any) -> str | None:
    if isinstance(value, str):
        if name in REQUIRED and not value:
            return "is empty"
        if problem := text_problem(value, max_length=_text_limit(fact_type, name)):
            return problem
        if name == "currency" and not _CURRENCY.fullmatch(value):
            return "is not a three-letter currency code"
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        low, high = _int_range(fact_type, name)
        if not low <= value <= high:
            return f"is out of range ({low}..{high})"
    elif isinstance(value, datetime):
        low, high = FACT_TIME_RANGE
        if not low <= value < high:
            return "is a timestamp outside 1970..2100"
    elif isinstance(value, tuple | list):
        for item in value:
            if isinstance(item, str) and (
                problem := text_problem(item, max_length=DEFAULT_MAX_LENGTH)
            ):
                return problem
    return None


def fact_problem(fact: Any) -> str | None:
    """Why a parsed fact could not be merged into the mirror stores, or None. Limits come
    from the columns each field is stored in (`COLUMNS`); other text fields get 255."""
    fact_type = type(fact)
    for name in _field_names(fact_type):
        value = getattr(fact, name)
        if is_dataclass(value):  # the event's version: its own fields
            if problem := fact_problem(value):
                return problem
        elif problem := _value_problem(fact_type, name, value):
            return f"{name.replace('_', ' ')} {problem}"
    return None
