"""/health/: PostgreSQL and the Redis broker, with real services and a closed port."""

import socket
import time
from unittest import mock

import pytest
from django.db import OperationalError

pytestmark = pytest.mark.django_db

REAL_REDIS = "redis://127.0.0.1:6379/15"


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthy_with_the_real_postgresql_and_redis(client, settings):
    settings.CELERY_BROKER_URL = REAL_REDIS

    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    assert response["Cache-Control"] == "no-store"


def test_a_broker_on_a_closed_port_fails_the_redis_check_within_the_timeout(client, settings):
    settings.CELERY_BROKER_URL = f"redis://:hunter2-secret@127.0.0.1:{closed_port()}/0"

    started = time.monotonic()
    response = client.get("/health/")

    assert time.monotonic() - started < 3
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["failing"] == ["redis"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")
    assert "hunter2" not in response.content.decode()  # no broker URL, no credentials


@pytest.mark.parametrize("broker_url", ["", "memory://"])
def test_the_embedded_default_has_no_broker_and_is_healthy(client, settings, broker_url):
    settings.CELERY_BROKER_URL = broker_url

    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "embedded"}


def test_a_database_failure_is_named(client, settings):
    from config import health

    def database_down() -> str:
        raise OperationalError("could not connect to server: Connection refused")

    settings.CELERY_BROKER_URL = REAL_REDIS
    with mock.patch.dict(health.CHECKS, {"database": database_down}):
        response = client.get("/health/")

    assert response.status_code == 503
    assert response.json() == {
        "status": "error",
        "failing": ["database"],
        "checks": {"database": "error: OperationalError", "redis": "ok"},
    }


def test_health_needs_no_authentication(client, settings, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "only-for-metrics")
    settings.CELERY_BROKER_URL = ""
    assert client.get("/health/").status_code == 200
