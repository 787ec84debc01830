"""GET /health/: can this process reach PostgreSQL and the Redis broker?

200 {"status": "ok", "checks": {"database": "ok", "redis": "ok"}} when both answer,
503 {"status": "error", "failing": ["redis"], "checks": {..., "redis": "error: ConnectionError"}}
when one does not. With no broker configured (the embedded default, tasks in-process:
CELERY_BROKER_URL empty or kombu's `memory://` stand-in) the Redis check reports
"embedded" and does not fail. No authentication; nothing about internals beyond the
failing check's name and the exception's class.
"""

import logging

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 1.0
OK = "ok"


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return OK


def check_redis() -> str:
    url = settings.CELERY_BROKER_URL
    if not url or url.startswith("memory://"):
        return "embedded"  # no broker configured: tasks run in-process
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return "skipped: broker is not Redis"
    client = redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),  # one try: the answer within the timeout
    )
    try:
        client.ping()
    finally:
        client.close()
    return OK


CHECKS = {"database": check_database, "redis": check_redis}


@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    failing: list[str] = []
    for name, check in CHECKS.items():
        try:
            checks[name] = check()
        except Exception as error:  # noqa: BLE001 - any failure is the answer
            logger.warning(
                "event=health_check_failed check=%s error=%s", name, type(error).__name__
            )
            checks[name] = f"error: {type(error).__name__}"
            failing.append(name)
    body: dict = {"status": "error" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    response = JsonResponse(body, status=503 if failing else 200)
    response["Cache-Control"] = "no-store"
    return response
