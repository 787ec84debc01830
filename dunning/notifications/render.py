"""TEMPORARY stub, replaced by the rendering branch."""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RenderedNotice:
    language: str
    subject: str
    text: str
    html: str


def choose_language(preferred_locales: Sequence[str]) -> str:
    for locale in preferred_locales:
        if locale.lower()[:2] in ("en", "fr"):
            return locale.lower()[:2]
    return "en"


def render_notice(
    kind: str, context: dict, *, preferred_locales: Sequence[str] = ()
) -> RenderedNotice:
    language = choose_language(preferred_locales)
    return RenderedNotice(language, f"{kind}", f"{kind} {context}", f"<p>{kind}</p>")
