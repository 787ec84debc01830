"""The webhook event log's figures at /metrics: events by type and state, and how long
processing takes. `config.metrics` wires this collector next to the other apps' ones.

The histogram helpers here are shared with the other collectors: a histogram computed in one
aggregate query (count FILTER per bucket), without loading rows.
"""

from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from billing_events.models import WebhookEvent

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
LATENCY_WINDOW = timedelta(hours=1)


def latency_aggregates(latency: F) -> dict:
    """count(*) FILTER (WHERE latency <= le) for every bucket, the count and the sum:
    a histogram in one aggregate, without loading rows."""
    aggregates = {
        f"le_{index}": Count("pk", filter=Q(latency__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(LATENCY_BUCKETS)
    }
    aggregates["count"] = Count("pk")
    aggregates["sum"] = Sum(latency)
    return aggregates


def buckets(row: dict) -> list[tuple[str, float]]:
    buckets = [
        (str(float(bound)), float(row[f"le_{index}"] or 0))
        for index, bound in enumerate(LATENCY_BUCKETS)
    ]
    return [*buckets, ("+Inf", float(row["count"] or 0))]


def seconds(value: timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


class WebhookEventCollector(Collector):
    """Reads the event log on every scrape. `now` is the service's clock, passed in so this
    app does not depend on the one that owns the clock."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        yield from self.collect_at(self.now())

    def collect_at(self, now: datetime) -> Iterator[Metric]:
        """The figures as of `now`: a scrape reads the clock once for every collector."""
        yield from self._webhook_events(now)

    # --- webhook events ------------------------------------------------------------------
    def _webhook_events(self, now: datetime) -> Iterator[Metric]:
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        recovered: dict[str, int] = defaultdict(int)
        rows = WebhookEvent.objects.values_list("type", "status", "recovered_by_polling").annotate(
            n=Count("pk")
        )
        for event_type, status, by_polling, count in rows.order_by():
            totals[event_type][status] += count
            if by_polling:
                recovered[event_type] += count

        ingested = CounterMetricFamily(
            "dunning_webhook_events_ingested",
            "Stripe events stored by the webhook endpoint, by event type.",
            labels=["type"],
        )
        finished = {
            status: CounterMetricFamily(
                f"dunning_webhook_events_{status}",
                f"Stored events now in state {status}, by event type.",
                labels=["type"],
            )
            for status in ("processed", "ignored", "dead")
        }
        waiting = {
            status: GaugeMetricFamily(
                f"dunning_webhook_events_{status}",
                help_text,
                labels=["type"],
            )
            for status, help_text in (
                ("received", "Stored events not processed yet, by event type."),
                ("failed", "Events whose processing failed and will be retried, by type."),
            )
        }
        for event_type in sorted(totals):
            by_status = totals[event_type]
            ingested.add_metric([event_type], sum(by_status.values()))
            for status, family in (finished | waiting).items():
                family.add_metric([event_type], by_status.get(status, 0))
        yield ingested
        yield from finished.values()
        yield from waiting.values()

        gaps = CounterMetricFamily(
            "dunning_webhook_events_recovered_by_polling",
            "Events no webhook delivered, stored by the polling backstop, by event type.",
            labels=["type"],
        )
        for event_type in sorted(totals):
            gaps.add_metric([event_type], recovered.get(event_type, 0))
        yield gaps

        latency = ExpressionWrapper(F("processed_at") - F("received_at"), DurationField())
        row = (
            WebhookEvent.objects.filter(
                processed_at__isnull=False, processed_at__gte=now - LATENCY_WINDOW
            )
            .annotate(latency=latency)
            .aggregate(**latency_aggregates(F("latency")))
        )
        histogram = GaugeHistogramMetricFamily(
            "dunning_webhook_processing_latency_seconds",
            "Seconds from storing a webhook event to processing it, over the events "
            "processed in the last hour.",
            buckets=buckets(row),
            gsum_value=seconds(row["sum"]),
        )
        yield histogram
