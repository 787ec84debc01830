"""Prometheus metrics at /metrics, read from PostgreSQL at scrape time.

The numbers live in the database, not in process memory, so whichever web process
answers the scrape, the figures are the same ones the workers and beat produced (no
prometheus_client multiprocess mode). A scrape costs a constant number of aggregate
queries, whatever the size of the tables (tested).

Access: open, unless METRICS_TOKEN is set; then `Authorization: Bearer <token>` is required.
"""

import hmac
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from billing_events.models import WebhookEvent
from core import clock
from dunning.models import (
    AccountStanding,
    BadDebtEpisode,
    CaseState,
    CustomerNotice,
    DunningCase,
    OutboxItem,
)
from dunning.policy import current_policy
from dunning.stripe_conflicts import KINDS, conflicted_cases

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
LATENCY_WINDOW = timedelta(hours=1)
NO_DECLINE = "none"  # decline class label of a retry that succeeded (no decline code)


def _latency_aggregates(latency: F) -> dict:
    """count(*) FILTER (WHERE latency <= le) for every bucket, the count and the sum:
    a histogram in one aggregate, without loading rows."""
    aggregates = {
        f"le_{index}": Count("pk", filter=Q(latency__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(LATENCY_BUCKETS)
    }
    aggregates["count"] = Count("pk")
    aggregates["sum"] = Sum(latency)
    return aggregates


def _buckets(row: dict) -> list[tuple[str, float]]:
    buckets = [
        (str(float(bound)), float(row[f"le_{index}"] or 0))
        for index, bound in enumerate(LATENCY_BUCKETS)
    ]
    return [*buckets, ("+Inf", float(row["count"] or 0))]


def _seconds(value: timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


class DunningCollector(Collector):
    """Reads the figures from the database on every scrape."""

    def collect(self) -> Iterator[Metric]:
        now = clock.now()
        yield from self._webhook_events(now)
        yield from self._cases(now)
        yield from self._retries()
        yield from self._bad_debt()
        yield from self._outbox(now)
        yield from self._customer_notices()
        yield from self._standings(now)
        yield from self._stripe_conflicts()
        yield from self._health()

    # --- webhook events ------------------------------------------------------------------
    def _webhook_events(self, now) -> Iterator[Metric]:
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
            .aggregate(**_latency_aggregates(F("latency")))
        )
        histogram = GaugeHistogramMetricFamily(
            "dunning_webhook_processing_latency_seconds",
            "Seconds from storing a webhook event to processing it, over the events "
            "processed in the last hour.",
            buckets=_buckets(row),
            gsum_value=_seconds(row["sum"]),
        )
        yield histogram

    # --- dunning cases -------------------------------------------------------------------
    def _cases(self, now) -> Iterator[Metric]:
        cases = GaugeMetricFamily(
            "dunning_cases", "Dunning cases by state and level.", labels=["state", "level"]
        )
        rows = DunningCase.objects.values_list("state", "level").annotate(n=Count("pk"))
        for state, level, count in sorted(rows.order_by()):
            cases.add_metric([state, level], count)
        yield cases

        threshold = getattr(settings, "LIFTING_STUCK_AFTER_SECONDS", 3600)
        stuck = (
            DunningCase.objects.filter(state=CaseState.LIFTING)
            .annotate(since=Coalesce("last_decision__decided_at", "opened_at"))
            .filter(since__lt=now - timedelta(seconds=threshold))
            .count()
        )
        gauge = GaugeMetricFamily(
            "dunning_cases_stuck_in_lifting",
            f"Cases in lifting whose last decision is older than {threshold} s "
            "(LIFTING_STUCK_AFTER_SECONDS).",
        )
        gauge.add_metric([], stuck)
        yield gauge

    # --- payment retries -----------------------------------------------------------------
    def _retries(self) -> Iterator[Metric]:
        rows = (
            OutboxItem.objects.filter(
                kind=OutboxItem.Kind.PAYMENT_RETRY,
                status__in=[OutboxItem.Status.DONE, OutboxItem.Status.DEAD],
            )
            .values_list("status", KT("result__outcome"), KT("result__decline_code"))
            .annotate(n=Count("pk"))
            .order_by()
        )
        policy = current_policy()
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for status, outcome, decline_code, count in rows:
            if status == OutboxItem.Status.DEAD:
                outcome = "error"  # the gateway refused the call: no answer about the card
            decline_class = policy.classify(decline_code).value if decline_code else NO_DECLINE
            totals[(decline_class, outcome or "unknown")] += count
        family = CounterMetricFamily(
            "dunning_payment_retries",
            "Payment retries run by dunning, by the decline class of their answer (none when "
            "it succeeded) and outcome (succeeded, declined, error).",
            labels=["decline_class", "outcome"],
        )
        for (decline_class, outcome), count in sorted(totals.items()):
            family.add_metric([decline_class, outcome], count)
        yield family

    # --- bad debt ------------------------------------------------------------------------
    def _bad_debt(self) -> Iterator[Metric]:
        rows = (
            BadDebtEpisode.objects.values_list("reason", "exit_reason")
            .annotate(total=Count("pk"), open=Count("pk", filter=Q(exited_at__isnull=True)))
            .order_by()
        )
        entries: dict[str, int] = defaultdict(int)
        exits: dict[str, int] = defaultdict(int)
        current: dict[str, int] = defaultdict(int)
        for reason in BadDebtEpisode.Reason.values:
            entries[reason] = current[reason] = 0
        for reason, exit_reason, total, still_open in rows:
            entries[reason] += total
            current[reason] += still_open
            if total > still_open:
                exits[exit_reason or "unknown"] += total - still_open
        entered = CounterMetricFamily(
            "dunning_bad_debt_entries",
            "Accounts that entered bad debt, by reason.",
            labels=["reason"],
        )
        exited = CounterMetricFamily(
            "dunning_bad_debt_exits",
            "Accounts that left bad debt, by how they left (exit reason).",
            labels=["exit_reason"],
        )
        now_in = GaugeMetricFamily(
            "dunning_bad_debt_accounts",
            "Accounts in bad debt now, by the reason they entered.",
            labels=["reason"],
        )
        for reason in sorted(entries):
            entered.add_metric([reason], entries[reason])
            now_in.add_metric([reason], current[reason])
        for exit_reason in sorted(exits):
            exited.add_metric([exit_reason], exits[exit_reason])
        yield entered
        yield exited
        yield now_in

    # --- outbox --------------------------------------------------------------------------
    def _outbox(self, now) -> Iterator[Metric]:
        due = Q(next_attempt_at__lte=now)
        rows = (
            OutboxItem.objects.filter(status=OutboxItem.Status.PENDING)
            .values("kind")
            .annotate(
                pending=Count("pk"),
                due=Count("pk", filter=due),
                oldest_due=Min("next_attempt_at", filter=due),
            )
            .order_by()
        )
        by_kind = {kind: {"pending": 0, "due": 0, "oldest_due": None} for kind in OutboxItem.Kind}
        for row in rows:
            by_kind[row["kind"]] = row
        pending = GaugeMetricFamily(
            "dunning_outbox_pending",
            "Side effects waiting in the outbox (including retries scheduled later), by kind.",
            labels=["kind"],
        )
        due_now = GaugeMetricFamily(
            "dunning_outbox_due",
            "Pending side effects whose time has come, by kind.",
            labels=["kind"],
        )
        age = GaugeMetricFamily(
            "dunning_outbox_oldest_due_age_seconds",
            "Seconds the longest-waiting due pending item has been due, by kind "
            "(0 when nothing is due).",
            labels=["kind"],
        )
        for kind in sorted(by_kind):
            row = by_kind[kind]
            label = [str(kind)]
            pending.add_metric(label, row["pending"])
            due_now.add_metric(label, row["due"])
            oldest = row["oldest_due"]
            age.add_metric(label, max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
        yield pending
        yield due_now
        yield age

        lateness = ExpressionWrapper(F("completed_at") - F("next_attempt_at"), DurationField())
        histograms = GaugeHistogramMetricFamily(
            "dunning_outbox_completion_delay_seconds",
            "Seconds from a side effect's due time to its completion, over the items done "
            "in the last hour, by kind.",
            labels=["kind"],
        )
        rows = (
            OutboxItem.objects.filter(
                status=OutboxItem.Status.DONE, completed_at__gte=now - LATENCY_WINDOW
            )
            .annotate(latency=lateness)
            .values("kind")
            .annotate(**_latency_aggregates(F("latency")))
            .order_by()
        )
        for row in sorted(rows, key=lambda row: row["kind"]):
            histograms.add_metric([row["kind"]], _buckets(row), _seconds(row["sum"]))
        yield histograms

    # --- customer notices ----------------------------------------------------------------
    def _customer_notices(self) -> Iterator[Metric]:
        counts = dict.fromkeys(
            ((kind, status) for kind in CustomerNotice.Kind for status in CustomerNotice.Status),
            0,
        )
        rows = CustomerNotice.objects.values_list("kind", "status").annotate(n=Count("pk"))
        for kind, status, count in rows.order_by():
            counts[(kind, status)] = count
        # A gauge: a notice moves from scheduled to sent (or withdrawn), so no count only grows.
        # Every kind and status is present, at 0 too, so an alert on failed sees a series.
        family = GaugeMetricFamily(
            "dunning_customer_notices",
            "Customer notices by kind and delivery status (scheduled, sending, sent, withdrawn, "
            "skipped, failed; shadow: would have been sent outside the rollout gate).",
            labels=["kind", "status"],
        )
        for (kind, status), count in sorted(counts.items()):
            family.add_metric([str(kind), str(status)], count)
        yield family

    # --- Account Management --------------------------------------------------------------
    def _standings(self, now) -> Iterator[Metric]:
        row = AccountStanding.objects.exclude(acknowledged=F("requested")).aggregate(
            n=Count("pk"), oldest=Min("requested_at")
        )
        waiting = GaugeMetricFamily(
            "dunning_account_standings_unacknowledged",
            "Accounts whose standing Account Management has not acknowledged as requested.",
        )
        waiting.add_metric([], row["n"] or 0)
        oldest = GaugeMetricFamily(
            "dunning_account_standing_oldest_unacknowledged_age_seconds",
            "Seconds since the oldest standing still unacknowledged was requested (0 if none).",
        )
        since = row["oldest"]
        oldest.add_metric([], max((now - since).total_seconds(), 0.0) if since else 0.0)
        yield waiting
        yield oldest

    # --- Stripe's own retries and cancellations --------------------------------------------
    def _stripe_conflicts(self) -> Iterator[Metric]:
        found = conflicted_cases()
        gauge = GaugeMetricFamily(
            "dunning_stripe_conflict_cases",
            "Open cases where Stripe Billing retried an invoice (stripe_retried) or cancelled "
            "a subscription (stripe_cancelled) on its own: a Stripe setting to turn off.",
            labels=["kind"],
        )
        for kind in KINDS:
            gauge.add_metric([kind], len(found[kind]))
        yield gauge

    # --- health ----------------------------------------------------------------------------
    def _health(self) -> Iterator[Metric]:
        from config.health import CHECKS

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


registry = CollectorRegistry(auto_describe=False)
registry.register(DunningCollector())


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
