"""A customer notice in words: subject, plain text and HTML, in the customer's language.

Rendering only. Which notice an account gets, and when, is decided elsewhere; this module
turns one notice's stored context (plain JSON data, so the admin can preview and re-render
it) into the words the customer reads. The words live in Django templates under
`notices/`, which a deployer overrides by putting a template of the same name in a
directory listed in TEMPLATES["DIRS"], and in the translations under `dunning/locale`.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.template import Context, Engine
from django.utils import formats, timezone, translation
from django.utils.translation import pgettext

from dunning.notifications.money import format_amount

COMMON_KEYS = ("email", "stripe_customer_id", "action_url", "action", "upgrade")
# What each kind reads beyond COMMON_KEYS; the planner stores exactly these.
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "payment_failed": ("decline_class", "amount", "currency", "next_retry_at"),
    "card_expiring": ("expires_at", "days_left"),
    "step_ahead": ("level", "takes_effect_at", "amount", "currency"),
    "final_notice": ("cancels_at", "amount", "currency"),
    "recovered": ("amount", "currency"),
    "bad_debt_paid": ("amount", "currency"),
}
KINDS = frozenset(KIND_KEYS)
ACTIONS = frozenset({"pay_invoice", "update_payment_method", "authenticate"})
DECLINE_CLASSES = frozenset({"soft", "hard", "fraud", "auth_required"})
UPGRADE_LEVELS = frozenset({"upgrade_restricted", "upgrade_reverted"})
LEVELS = frozenset({"premium_restricted", "read_only", "suspended"}) | UPGRADE_LEVELS
# The day a customer reads in a notice, and the name of a timestamp in the context.
DAY_OF = {"next_retry_at": "next_retry_on", "takes_effect_at": "takes_effect_on",
          "cancels_at": "cancels_on"}  # fmt: skip


@dataclass(frozen=True)
class RenderedNotice:
    language: str  # "en" or "fr"
    subject: str  # one line, no newline
    text: str  # plain-text body
    html: str  # full HTML document (inline styles only: email clients)


def choose_language(preferred_locales: Sequence[str]) -> str:
    """The first of Stripe's `preferred_locales` (most preferred first) that we write in.

    "fr-FR", "fr_CA" and "FR" all choose "fr"; a locale we have no words for is skipped;
    with none left, the site's LANGUAGE_CODE ("en-us" gives "en").
    """
    supported = {code.lower() for code, _name in settings.LANGUAGES}
    for locale in preferred_locales:
        if isinstance(locale, str) and (language := _match(locale, supported)):
            return language
    default = _normalize(settings.LANGUAGE_CODE)
    return _match(default, supported) or default.split("-")[0]


def render_notice(
    kind: str, context: Mapping[str, Any], *, preferred_locales: Sequence[str] = ()
) -> RenderedNotice:
    """Render notice `kind` from its stored `context` in the customer's language.

    Raises ValueError for an unknown kind or a context the kind cannot be written from.
    Renders under translation.override (and UTC), so no language stays activated.
    """
    _check(kind, context)
    language = choose_language(preferred_locales)
    engine = Engine.get_default()
    with translation.override(language), timezone.override(UTC):
        values = _template_values(kind, context, language)
        subject = _one_line(_render(engine, f"notices/{kind}.subject.txt", values))
        values["subject"] = subject
        text = _tidy_text(_render(engine, f"notices/{kind}.txt", values))
        html = _render(engine, f"notices/{kind}.html", values, autoescape=True)
    return RenderedNotice(language=language, subject=subject, text=text, html=html)


def _normalize(locale: str) -> str:
    return locale.strip().lower().replace("_", "-")


def _match(locale: str, supported: set[str]) -> str | None:
    tag = _normalize(locale)
    if tag in supported:
        return tag
    primary = tag.split("-")[0]
    return primary if primary in supported else None


def _check(kind: str, context: Mapping[str, Any]) -> None:
    """Refuse what would make a wrong message rather than render it."""
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}; known: {sorted(KINDS)}")
    missing = [key for key in (*COMMON_KEYS, *KIND_KEYS[kind]) if key not in context]
    if missing:
        raise ValueError(f"{kind} notice context lacks {missing}")
    if context["action"] not in ACTIONS:
        raise ValueError(f"unknown action {context['action']!r}")
    url = context["action_url"]
    # A link in an email must be absolute and must not run script (javascript:, data:).
    if not isinstance(url, str) or (url and not re.match(r"https?://", url, re.IGNORECASE)):
        raise ValueError(f"action_url must be '' or an http(s) URL, not {url!r}")
    if kind == "payment_failed" and context["decline_class"] not in DECLINE_CLASSES:
        raise ValueError(f"unknown decline class {context['decline_class']!r}")
    if kind == "step_ahead":
        if context["level"] not in LEVELS:
            raise ValueError(f"unknown level {context['level']!r}")
        # A failed upgrade must never read as a threat to the base plan.
        if context["upgrade"] and context["level"] not in UPGRADE_LEVELS:
            raise ValueError(f"an upgrade notice cannot announce level {context['level']!r}")
    if kind == "final_notice" and context["upgrade"]:
        raise ValueError("a failed upgrade never leads to cancellation: no final notice")


def _template_values(kind: str, context: Mapping[str, Any], language: str) -> dict[str, Any]:
    """The context as templates read it: amounts and days already in the customer's words.

    Called with the customer's language active: formats depend on it.
    """
    values: dict[str, Any] = dict(context)
    values.update(kind=kind, language=language, upgrade=bool(context["upgrade"]))
    if "amount" in context:
        values["amount_minor"] = context["amount"]
        values["amount"] = format_amount(context["amount"], context["currency"])
    for key, day_key in DAY_OF.items():
        if key in context:
            moment = _parse_moment(key, context[key], optional=key == "next_retry_at")
            values[key] = moment
            values[day_key] = _day(moment) if moment else ""
    if kind == "card_expiring":
        # `expires_at` is the first moment the card fails: the month before is the one
        # printed on the card, the month the customer knows.
        expires_at = _parse_moment("expires_at", context["expires_at"])
        values["expires_at"] = expires_at
        values["expiry_month"] = formats.date_format(
            expires_at - timedelta(days=1), pgettext("notice month format", "F Y")
        )
        values["days_left"] = int(context["days_left"])
    return values


def _parse_moment(key: str, value: Any, *, optional: bool = False) -> datetime | None:
    if value is None and optional:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be an ISO-8601 timestamp, not {value!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{key} has no UTC offset: {value!r}")
    return moment.astimezone(UTC)


def _day(moment: datetime) -> str:
    return formats.date_format(moment, pgettext("notice date format", "j F Y"))


def _render(engine: Engine, name: str, values: dict[str, Any], *, autoescape: bool = False) -> str:
    # Plain text is never HTML-escaped: "AT&T" must not reach a subject as "AT&amp;T".
    return engine.get_template(name).render(Context(values, autoescape=autoescape))


def _one_line(text: str) -> str:
    # Line breaks out, but not the no-break spaces French puts before ":" and in amounts.
    return re.sub(r"[ \t\r\n\f\v\x85\u2028\u2029]+", " ", text).strip()


def _tidy_text(text: str) -> str:
    """Template tags leave blank lines and indentation; a plain-text email should not."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"
