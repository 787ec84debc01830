"""The service configured for a run (test clock, in-process tasks, the simulated gateway,
Account Management on loopback), and `run_service`: a book through it."""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.db import connection
from django.test.utils import override_settings

from billing_events.gateway import SIMULATED
from billing_events.models import Account, WebhookEvent
from config.celery import app as celery_app
from simulation.book import Book
from simulation.clock_walk import ClockWalk
from simulation.driver import Driver
from simulation.service_run import SECRET, START, ServiceRun, SimulationError
from simulation.stripe_side import FailureLookup

QUIET_LOGGERS = ("billing_events", "dunning", "entitlements", "celery", "kombu")


@contextmanager
def _quiet() -> Iterator[None]:
    """The gateway and workers log every call at INFO: thousands of lines in a run."""
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Eager Celery has kombu say once that no broker host was given: known and harmless.
    logging.getLogger("kombu").setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def _no_flush_per_commit() -> Iterator[None]:
    """The run's database is a scratch one, thrown away afterwards: its commits need not
    reach the disk one by one. Waiting for each (SQLite's fsync, PostgreSQL's WAL flush)
    was half a run's time on this machine. Commit order, isolation and locks are
    unchanged; only what a power cut would lose. For this connection only, restored."""
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute("SET synchronous_commit TO off")
        else:
            cursor.execute("PRAGMA synchronous")
            saved = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous = OFF")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if postgres:
                cursor.execute("RESET synchronous_commit")
            else:
                cursor.execute(f"PRAGMA synchronous = {int(saved)}")


@contextmanager
def service_for_simulation(driver: Driver) -> Iterator[None]:
    """The service configured for a run, everything restored afterwards: the test clock
    on, tasks in-process, the simulated gateway answering from the book, Account
    Management on loopback, no real Stripe, no outcome subscribers."""
    saved_gateway = (SIMULATED.decide, SIMULATED.default)
    saved_eager = celery_app.conf.task_always_eager
    driver.am.start()
    try:
        with (
            override_settings(
                DUNNING_TEST_CLOCK=True,
                STRIPE_API_KEY="",
                STRIPE_WEBHOOK_SECRETS=[SECRET],
                # In-process tasks, as on the embedded default: the request processes.
                WEBHOOK_ENQUEUE_ON_INGEST=True,
                ACCOUNT_MANAGEMENT_URL=driver.am.url,
                ACCOUNT_MANAGEMENT_TIMEOUT_SECONDS=2.0,
                DUNNING_OUTCOME_WEBHOOK_URLS=[],
                # The service as it runs once rolled out: enforcing for every account.
                DUNNING_ROLLOUT_DEFAULT_STAGE="100",
                # Customer notices are planned and claimed as in production; the simulated
                # customers' mail goes nowhere.
                EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
            ),
            _quiet(),
            _no_flush_per_commit(),
        ):
            celery_app.conf.task_always_eager = True
            SIMULATED.reset()
            SIMULATED.decide = driver.decide
            yield
    finally:
        SIMULATED.decide, SIMULATED.default = saved_gateway
        SIMULATED.reset()
        celery_app.conf.task_always_eager = saved_eager
        driver.am.stop()


def run_service(
    book: Book,
    *,
    progress: Callable[[str], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> ServiceRun:
    """Run the book through the service in the current database, which must hold no
    accounts or webhook events yet; with `shard` (index, count), only the accounts whose
    index % count == index (see `simulation.shard`)."""
    if Account.objects.exists() or WebhookEvent.objects.exists():
        raise SimulationError(
            "the database already holds accounts or webhook events; the simulation needs an "
            "empty one (manage.py simulate makes a scratch database of its own)"
        )
    driver = Driver(book, progress=progress, shard=shard)
    with service_for_simulation(driver):
        driver.walk = ClockWalk(START, on_run=driver.ran)
        with driver.walk.held():
            started = time.perf_counter()
            driver.simulate()
            driver.run.seconds["simulate"] = time.perf_counter() - started
            started = time.perf_counter()
            driver.converge()
            driver.run.seconds["converge"] = time.perf_counter() - started
        driver.run.account_management = {
            "requests": driver.am.requests,
            "refused_during_outage": driver.am.refused,
        }
        driver.run.am_standing = dict(driver.am.standing)
        driver.run.cancelled = set(driver.cancelled)
    driver.run.failure_lookup_available = (
        FailureLookup is not None and getattr(SIMULATED, "script_failure", None) is not None
    )
    return driver.run
