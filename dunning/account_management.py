"""Client for Account Management: tells it the account's standing.

Off when ACCOUNT_MANAGEMENT_URL is unset. Only ever called from an outbox worker, never
while a row lock is held, and never awaited by escalation.
"""

import logging

import requests
from django.conf import settings

from dunning.effects.result import EffectResult

logger = logging.getLogger(__name__)


def send_standing(*, stripe_customer_id: str, standing: str, idempotency_key: str) -> EffectResult:
    base = settings.ACCOUNT_MANAGEMENT_URL
    if not base:
        return EffectResult(
            ok=True, detail="Account Management is off (ACCOUNT_MANAGEMENT_URL unset)"
        )
    url = f"{base.rstrip('/')}/accounts/{stripe_customer_id}/standing"
    try:
        response = requests.put(
            url,
            json={"standing": standing},
            headers={"Idempotency-Key": idempotency_key},
            timeout=settings.ACCOUNT_MANAGEMENT_TIMEOUT_SECONDS,
        )
    except requests.RequestException as error:
        logger.warning("event=account_management_unreachable error=%s", type(error).__name__)
        return EffectResult(ok=False, retryable=True, detail=type(error).__name__)
    if response.status_code >= 500 or response.status_code == 429:
        return EffectResult(ok=False, retryable=True, detail=f"HTTP {response.status_code}")
    if response.status_code >= 400:
        return EffectResult(ok=False, retryable=False, detail=f"HTTP {response.status_code}")
    return EffectResult(ok=True, detail=f"HTTP {response.status_code}")
