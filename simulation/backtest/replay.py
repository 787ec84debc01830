"""One replay of a window's stored events through the real service, in the current (scratch)
database, under one policy document, and what each account ended with.

The service is configured as the simulator's (test clock on, in-process tasks, enforcing
for every account, no real Stripe, no Account Management, no outcome subscribers), with the
simulated gateway answering retries through a `HistoryGateway`. The clock walks from one
moment to the next that matters (a stored event's received_at, an answer Stripe owes, a
review or side effect due, midnight UTC for the daily count of restrictions), and at each
the due events are posted, signed, to `/webhooks/stripe/` in their stored order.

The walk moves the test clock itself, as `test_clock.advance` would (the same moments, the
same work at each, in the same order: the report is the same to the byte), but holds it
in memory and finds the next due moment in one statement; a replay is the only process on
its scratch database, and commits there need not wait for the disk.
"""

import heapq
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.test import Client
from django.test.utils import override_settings

from billing_events.gateway import SIMULATED
from billing_events.signature import sign_header
from config.celery import app as celery_app
from core import clock
from dunning import outbox, policy_versions
from dunning.intake import processing
from dunning.policy_document import policy_from_document
from entitlements.models import Restriction
from simulation.backtest.echo import Echoes
from simulation.backtest.gateway import HistoryGateway
from simulation.backtest.history import History, decline_class
from simulation.backtest.outcomes import AccountOutcome, collect
from simulation.clock_walk import ClockWalk
from simulation.due import Due
from simulation.scratch import GrowingStatistics
from simulation.service import _no_flush_per_commit, _quiet

SECRET = "whsec_backtest_only"
DAY = timedelta(days=1)


@dataclass
class Replay:
    outcomes: dict[str, AccountOutcome]  # stripe customer id -> outcome
    answers: Counter  # HISTORY / CLASS_RATE -> retries answered
    events_posted: int = 0
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)


def install(document: dict, *, reason: str) -> None:
    """The document as the active version of this (scratch) database, through the service's
    own door, before any case opens."""
    policy_versions.forget_cache()  # parsed versions are cached per process by number
    first = policy_versions.ensure_initial_version()
    if first.document != document:
        version = policy_versions.create_version(
            document=document, author="backtest", reason=reason
        )
        policy_versions.activate(number=version.number, actor="backtest", reason=reason)
    policy_versions.forget_cache()


def replay(
    history: History,
    *,
    document: dict,
    start: datetime,
    end: datetime,
    label: str,
    progress: Callable[[str], None] | None = None,
) -> Replay:
    policy = policy_from_document(document, version=label)
    class_of = {
        invoice: decline_class(charges, policy) for invoice, charges in history.charges.items()
    }
    gateway = HistoryGateway(history.charges, history.retry_rate, class_of, clock.now)
    saved = (SIMULATED.decide, celery_app.conf.task_always_eager)
    with (
        override_settings(
            DUNNING_TEST_CLOCK=True,
            STRIPE_API_KEY="",
            STRIPE_WEBHOOK_SECRETS=[SECRET],
            WEBHOOK_ENQUEUE_ON_INGEST=True,
            ACCOUNT_MANAGEMENT_URL="",
            DUNNING_OUTCOME_WEBHOOK_URLS=[],
            DUNNING_ROLLOUT_DEFAULT_STAGE="100",
            EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
        ),
        _quiet(),
        _no_flush_per_commit(),
    ):
        celery_app.conf.task_always_eager = True
        SIMULATED.reset()
        SIMULATED.decide = gateway.decide
        for invoice_id, lookup in history.lookups.items():
            SIMULATED.script_failure(invoice_id, lookup)
        walk = _Walk(history, gateway, start=start, end=end, progress=progress)
        try:
            with walk.clock.held():
                install(document, reason=f"backtest: the {label} policy")
                started = time.perf_counter()
                walk.run()
                seconds = time.perf_counter() - started
        finally:
            SIMULATED.decide, celery_app.conf.task_always_eager = saved
            SIMULATED.reset()
            policy_versions.forget_cache()
    outcomes = collect(walk.restricted_days, walk.core_days)
    return Replay(outcomes, gateway.sources, walk.posted, seconds, walk.statuses)


class _Walk:
    def __init__(self, history, gateway, *, start, end, progress) -> None:
        self.events = history.replayed
        self.gateway = gateway
        self.echoes = Echoes()
        self.owed: list[tuple[datetime, int, dict]] = []  # events Stripe owes the replay
        self.order = itertools.count()
        self.start, self.end, self.progress = start, end, progress
        self.client = Client()
        self.posted = 0
        self.statuses: Counter = Counter()
        self.restricted_days: Counter = Counter()
        self.core_days: Counter = Counter()
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        self.next_midnight = midnight + DAY
        self.clock = ClockWalk(start, on_run=self._ran)
        self.statistics = GrowingStatistics()
        self.acted = True  # the service ran since the outbox's completed items were read

    @property
    def now(self) -> datetime:
        return self.clock.now

    def _ran(self) -> None:
        self.acted = True

    def run(self) -> None:
        index = 0
        due: Due | None = None
        while True:
            due = due or self.clock.due()
            candidates = [self.next_midnight]
            if index < len(self.events):
                candidates.append(self.events[index].received_at)
            if self.owed:
                candidates.append(self.owed[0][0])
            if due.next is not None:
                candidates.append(due.next)
            upcoming = max(self.now, min(candidates))
            if upcoming > self.end:
                self._advance(self.end, due)
                break
            self._advance(upcoming, due)
            if self.now >= self.next_midnight:
                self._count_restrictions()
                self.next_midnight += DAY
            posted = self.posted
            while index < len(self.events) and self.events[index].received_at <= self.now:
                self.echoes.seen(self.events[index])
                self._post(self.events[index].body.encode())
                index += 1
                if self.progress and index % 1000 == 0:
                    self.progress(f"{index}/{len(self.events)} events")
            while self.owed and self.owed[0][0] <= self.now:
                self._post(_bytes(heapq.heappop(self.owed)[2]))
            due = None
            if self.posted > posted:  # processed as posted: what they left due now
                due = self.clock.due()
                self.clock.due_now = due.now
            # With nothing due now the pump and the outbox have nothing to do: skipped.
            if self.clock.due_now:
                processing.sweep()
                outbox.drain()
                self.acted, due = True, None
            # Reads only: a probe taken after the posts still holds at the next step.
            self._collect_echoes()

    def _advance(self, to: datetime, due: Due) -> None:
        """What `test_clock.advance(to=to)` runs (`ClockWalk`), then Stripe's answers."""
        if self.clock.advance(to, due):
            self._collect_echoes()

    def _collect_echoes(self) -> None:
        answered, self.gateway.answered = self.gateway.answered, []
        for at, invoice_id, attempt, answer in answered:
            for event in self.echoes.after_retry(at, invoice_id, attempt, answer):
                heapq.heappush(self.owed, (at, next(self.order), event))
        # Only the service's work completes outbox items: none ran, none to read.
        if not self.acted:
            return
        self.acted = False
        for at, event in self.echoes.after_actions():
            heapq.heappush(self.owed, (at, next(self.order), event))

    def _post(self, payload: bytes) -> None:
        header = sign_header(payload=payload, secret=SECRET, timestamp=int(self.now.timestamp()))
        response = self.client.post(
            "/webhooks/stripe/",
            data=payload,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=header,
        )
        self.posted += 1
        self.acted = True
        self.statistics.grown_to(self.posted)
        self.statuses[response.status_code] += 1

    def _count_restrictions(self) -> None:
        codes: dict[str, set[str]] = defaultdict(set)
        for customer, code in Restriction.objects.values_list(
            "account__stripe_customer_id", "code"
        ):
            codes[customer].add(code)
        for customer, held in codes.items():
            self.restricted_days[customer] += 1
            self.core_days[customer] += "core_access" in held


def _bytes(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
