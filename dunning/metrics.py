"""Dunning's figures at /metrics, read from PostgreSQL at scrape time: cases, retries, bad
debt, the outbox, customer notices, Account Management standings, Stripe conflicts.
`config.metrics` wires this collector next to the other apps' ones.
"""

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from billing_events.metrics import LATENCY_WINDOW, buckets, latency_aggregates, seconds
from core import clock
from dunning.models import (
    AccountStanding,
    BadDebtEpisode,
    CaseState,
    CustomerNotice,
    DunningCase,
    OutboxItem,
)
from dunning.policy_versions import active_policy
from dunning.stripe_conflicts import KINDS, conflicted_cases

NO_DECLINE = "none"  # decline class label of a retry that succeeded (no decline code)


class DunningCollector(Collector):
    """Reads the figures from the database on every scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from self.collect_at(clock.now())

    def collect_at(self, now: datetime) -> Iterator[Metric]:
        """The figures as of `now`: a scrape reads the clock once for every collector."""
        yield from self._cases(now)
        yield from self._retries()
        yield from self._bad_debt()
        yield from self._outbox(now)
        yield from self._customer_notices()
        yield from self._standings(now)
        yield from self._stripe_conflicts()

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
        # The active stored version's classes: what support reads in the case view too.
        policy = active_policy()
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
            .annotate(**latency_aggregates(F("latency")))
            .order_by()
        )
        for row in sorted(rows, key=lambda row: row["kind"]):
            histograms.add_metric([row["kind"]], buckets(row), seconds(row["sum"]))
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
