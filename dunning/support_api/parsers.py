"""Request bodies of the support API: JSON with the webhook ingest's strictness.

DRF's JSONParser lets a deeply nested body raise RecursionError (a 500); this one answers
400 for it, as for NaN/Infinity, a BOM or a body that is not UTF-8.
"""

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from billing_events.validation import Rejected, loads_strict

# The support API's bodies are a few fields; nothing legitimate nests.
MAX_BODY_DEPTH = 8
MAX_BODY_BYTES = 64 * 1024


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        raw = stream.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise ParseError(f"JSON parse error - body larger than {MAX_BODY_BYTES} bytes")
        try:
            _, value = loads_strict(raw, max_depth=MAX_BODY_DEPTH)
        except Rejected as error:
            raise ParseError(f"JSON parse error - {error}") from None
        return value
