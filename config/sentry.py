"""Sentry set-up: on only when SENTRY_DSN is set, and never ships card data or secrets."""

import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

# Keys whose values must never leave the process, wherever they appear in an event.
SENSITIVE_KEY = re.compile(
    r"(card|number|cvc|exp_|fingerprint|secret|password|token|api_key|authorization|"
    r"stripe[-_]signature|cookie|iin|last4)",
    re.IGNORECASE,
)
PAN = re.compile(r"\b(?:\d[ -]?){13,19}\b")


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: "[Filtered]" if SENSITIVE_KEY.search(str(key)) else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return PAN.sub("[Filtered]", value)
    return value


def before_send(event: dict, hint: dict) -> dict:
    return scrub(event)


def init_sentry(dsn: str, **options: Any) -> None:
    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        before_send=before_send,
        **options,
    )
