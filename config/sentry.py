"""Sentry set-up: on only when SENTRY_DSN is set, and never ships card data or secrets.

Every payload leaves through a scrubber (`scrub`): errors and transactions (`before_send`,
`before_send_transaction`), breadcrumbs (`before_breadcrumb`) and logs (`before_send_log`).
It works on the serialized event, so it sees request bodies, headers, cookies, query
strings, extra, contexts, tags, exception messages, log messages and every frame's local
variables alike:

- a value under a sensitive key (card, cvc, exp_month, fingerprint, authorization,
  stripe-signature, cookie, token, secret ...) is replaced whole;
- in any string, card numbers (13-19 digits, spaced or dashed), Stripe secret and
  restricted keys, webhook secrets, bearer/basic credentials, sensitive `key=value` or
  `"key": value` pairs and "cvc 123" / "exp 12/30" phrases are masked.

The same text scrubber masks log lines (`config.logging.RedactingFilter`).
"""

import re
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

FILTERED = "[Filtered]"

# Keys whose values must never leave the process, wherever they appear in an event.
SENSITIVE_KEY = re.compile(
    r"(card|^number$|^pan$|cvc|cvv|^csc$|exp_|expir|fingerprint|last4|^iin$|"
    r"secret|passw|token|api[-_]?key|authorization|signature|cookie|session|dsn)",
    re.IGNORECASE,
)
# Sentry's own identifiers: hex strings that may contain a long run of decimal digits by
# chance; masking them would break trace links. Kept only when they look like ids.
ID_KEYS = frozenset(
    {"event_id", "trace_id", "span_id", "parent_span_id", "segment_id", "thread.id", "thread_id"}
)
HEX_ID = re.compile(r"^[0-9a-fA-F-]{8,36}$")

# Key names that announce a secret value in free text (log lines, raw bodies, query
# strings, exception messages): `cvc=123`, `"exp_month": 12`, `card[number]=...`,
# `Stripe-Signature: t=...`. The key must end with one of them, so `card_expiring_at=` or
# `CardError: message` keep their value.
_TEXT_KEY = (
    r"card(?:[_-]?(?:number|num|no))?|\[number\]|%5Bnumber%5D|cvc|cvv|csc|cvc2|cvv2|"
    r"exp_month|exp_year|expiry|expiration|fingerprint|last4|secret|passw(?:or)?d|token|"
    r"api[-_]?key|authorization|signature|cookie"
)
TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Card numbers first (a spaced number must go whole, before `card=4242` takes a group):
    # 13 to 19 digits, optionally grouped by spaces or dashes, not part of a longer digit
    # run, nor the fraction of a decimal ("succeeded in 0.0123456789012s"). Masks some
    # non-card numbers too (millisecond timestamps): the safe side.
    (re.compile(r"(?<![\d.])(?:\d[ -]?){12,18}\d(?!\d)"), FILTERED),
    # Stripe secret / restricted keys and webhook signing secrets.
    (re.compile(r"(?<![A-Za-z0-9])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]+"), FILTERED),
    (re.compile(r"(?<![A-Za-z0-9])whsec_[A-Za-z0-9]+"), FILTERED),
    # HTTP credentials.
    (re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{FILTERED}"),
    # A sensitive key followed by its value, in JSON, a query string or a key=value line
    # (bounded and anchored at the start of a word, so that long strings stay linear).
    (
        re.compile(
            rf"(?i)(?<![\w.\[\]%-])([\w.\[\]%-]{{0,64}}?(?:{_TEXT_KEY})(?:\]|%5D)?"
            r"[\"']?\s{0,3}[:=]\s{0,3}[\"']?)(?![{\[\s])[^\"'&\s;}\]]+"
        ),
        rf"\1{FILTERED}",
    ),
    # Phrases: "cvc 123", "CVV: 1234", "exp 12/30", "expires 01/2031".
    (re.compile(r"(?i)\b(cvc2?|cvv2?|csc)\b\W{0,3}\d{3,4}\b"), rf"\1 {FILTERED}"),
    (
        re.compile(r"(?i)\b(exp|expiry|expires|expiration)\b\W{0,3}\d{1,2}\s*/\s*\d{2,4}\b"),
        rf"\1 {FILTERED}",
    ),
)


def scrub_text(text: str) -> str:
    for pattern, replacement in TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_item(key: Any, item: Any) -> Any:
    if key in ID_KEYS and (isinstance(item, int) or (isinstance(item, str) and HEX_ID.match(item))):
        return item
    return FILTERED if SENSITIVE_KEY.search(str(key)) else scrub(item)


def scrub(value: Any) -> Any:
    """A copy of `value` with sensitive keys' values replaced and every string masked."""
    if isinstance(value, dict):
        return {key: _scrub_item(key, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return FILTERED if 13 <= len(str(abs(value))) <= 19 else value  # a PAN as a number
    if isinstance(value, float | Decimal | date | time | timedelta | UUID):
        return value
    # Anything else (raw objects in log attributes or breadcrumb data) leaves as masked text.
    return scrub_text(repr(value))


def scrub_event(event: dict) -> dict:
    """Scrub an event. Its top-level keys are Sentry's schema (`request`, `exception`,
    `extra`, `fingerprint` ...), so only what lies under them is judged by key."""
    return {key: scrub(item) for key, item in event.items()}


def before_send(event: dict, hint: dict) -> dict:
    # An exception here makes the SDK drop the event: failing closed, never open.
    return scrub_event(event)


def before_send_transaction(event: dict, hint: dict) -> dict:
    return scrub_event(event)


def before_breadcrumb(crumb: dict, hint: dict) -> dict:
    return scrub(crumb)


def before_send_log(log: dict, hint: dict) -> dict:
    # A log record's own fields (timestamps, severity, trace ids) are Sentry's; its body and
    # attributes (message parameters, logger extra, raw objects) are ours to scrub.
    return {
        **log,
        "body": scrub_text(str(log.get("body", ""))),
        "attributes": scrub(log.get("attributes") or {}),
    }


def init_sentry(dsn: str, **options: Any) -> None:
    """Start Sentry with the Django and Celery integrations. `options` go to
    `sentry_sdk.init` (the tests pass a capturing `transport`)."""
    # Neither `send_default_pii` (deprecated in sentry-sdk 2.7x) nor `data_collection` is
    # set: the SDK collects no user identity, cookies or task arguments, and filters the
    # usual credential headers. The scrubbers below are the guarantee on top of that.
    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        before_send=before_send,
        before_send_transaction=before_send_transaction,
        before_breadcrumb=before_breadcrumb,
        before_send_log=before_send_log,
        **options,
    )
