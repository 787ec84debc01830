"""Stripe webhook signature verification, exactly as Stripe signs.

Stripe sends `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...][,v0=...]` where each
v1 is HMAC-SHA256(secret, f"{t}.{raw_body}"). During a secret rotation Stripe signs
with both secrets, and we may hold both: any (secret, v1) pair that matches is enough.
"""

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass


class SignatureError(Exception):
    """The request is not provably from Stripe; the message is safe to return."""


@dataclass(frozen=True)
class SignatureHeader:
    timestamp: int
    v1_signatures: tuple[str, ...]


def parse_header(header: str | None) -> SignatureHeader:
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed Stripe-Signature header")
        if key == "t":
            if not value.isdigit():
                raise SignatureError("malformed timestamp in Stripe-Signature header")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("no timestamp in Stripe-Signature header")
    if not signatures:
        raise SignatureError("no v1 signature in Stripe-Signature header")
    return SignatureHeader(timestamp=timestamp, v1_signatures=tuple(signatures))


def compute_signature(secret: str, timestamp: int, payload: bytes) -> str:
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(
    *,
    payload: bytes,
    header: str | None,
    secrets: Iterable[str],
    tolerance_seconds: int,
    now_unix: float,
) -> int:
    """Return the signed timestamp, or raise SignatureError."""
    parsed = parse_header(header)
    secrets = [secret for secret in secrets if secret]
    if not secrets:
        raise SignatureError("no webhook secret configured")
    if abs(now_unix - parsed.timestamp) > tolerance_seconds:
        raise SignatureError("timestamp outside the tolerance zone")
    matched = False
    for secret in secrets:
        expected = compute_signature(secret, parsed.timestamp, payload)
        for candidate in parsed.v1_signatures:
            # Every comparison runs (no early exit) so timing leaks nothing.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no signature matches the expected signature for the payload")
    return parsed.timestamp


def sign_header(*, payload: bytes, secret: str, timestamp: int) -> str:
    """A header as Stripe would send it; used by the demo, simulator and benchmarks."""
    return f"t={timestamp},v1={compute_signature(secret, timestamp, payload)}"
