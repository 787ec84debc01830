"""Prometheus metrics at /metrics, read from PostgreSQL at scrape time.

Each app owns the collector of its figures (`billing_events.metrics`, `dunning.metrics`);
this module only wires them into one registry, adds the health checks, and serves it.

The numbers live in the database, not in process memory, so whichever web process
answers the scrape, the figures are the same ones the workers and beat produced (no
prometheus_client multiprocess mode). A scrape costs a constant number of aggregate
queries, whatever the size of the tables (tested).

Access: open, unless METRICS_TOKEN is set; then `Authorization: Bearer <token>` is required.
"""

import hmac
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from billing_events.metrics import WebhookEventCollector
from config.health import CHECKS
from core import clock
from dunning.metrics import DunningCollector

logger = logging.getLogger(__name__)


class HealthCollector:
    """The health endpoint's checks (config.health), seen from the process answering the scrape."""

    def collect_at(self, now: datetime) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "dunning_health_check_up",
            "1 when the health endpoint's check passes from this process, 0 when it fails.",
            labels=["check"],
        )
        for name, check in CHECKS.items():
            if name == "database":
                gauge.add_metric([name], 1)  # this scrape read it; down, /metrics answers 503
                continue
            try:
                check()
            except Exception:  # noqa: BLE001 - any failure is the answer
                gauge.add_metric([name], 0)
            else:
                gauge.add_metric([name], 1)
        yield gauge


class AtNow(Protocol):
    def collect_at(self, now: datetime) -> Iterator[Metric]: ...


# Each app's collector, in the order they appear in a scrape.
COLLECTORS: tuple[AtNow, ...] = (
    WebhookEventCollector(now=clock.now),
    DunningCollector(),
    HealthCollector(),
)


class ScrapeCollector(Collector):
    """Every app's figures as of one reading of the clock (under the test clock that reading
    is a query, so one scrape costs one)."""

    def collect(self) -> Iterator[Metric]:
        now = clock.now()
        for collector in COLLECTORS:
            yield from collector.collect_at(now)


registry = CollectorRegistry(auto_describe=False)
registry.register(ScrapeCollector())


def _token() -> str:
    token = getattr(settings, "METRICS_TOKEN", None)
    return os.environ.get("METRICS_TOKEN", "") if token is None else token


def _authorized(request: HttpRequest) -> bool:
    token = _token()
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # A scrape must not hold a web worker longer than Prometheus waits for it.
                timeout_ms = int(getattr(settings, "METRICS_STATEMENT_TIMEOUT_MS", 5000))
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
            body = generate_latest(registry)
    except DatabaseError:
        logger.exception("event=metrics_scrape_failed")
        return HttpResponse("database unavailable\n", status=503, content_type="text/plain")
    response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
