"""`simulate --workers N`: the book sharded over real Celery worker processes on the Redis
broker, each shard in a scratch database of its own, gives the single-process report byte
for byte; a shard run again gives the same facts; the merge does not depend on the order
the shards come back in.

The workers are real processes (`celery -A config worker -Q simulation`), started here with
this suite's database server and broker; each makes and drops its shard's scratch database
next to the configured one. The single-process run uses the test database, like
tests/test_simulation.py.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from config.celery import app as celery_app
from simulation import simulate
from simulation.facts import merge
from simulation.generator import generate
from simulation.measure import service_report
from simulation.mix import parse_mix
from simulation.report import as_json
from simulation.service_run import SimulationError
from simulation.shard import QUEUE
from tests.test_simulation import STRESS_HARD, _run

pytestmark = [pytest.mark.django_db, pytest.mark.worker]

ROOT = Path(__file__).resolve().parents[1]
BOOK = {"accounts": 40, "days": 30, "seed": 7}


def _purge_shards() -> None:
    with celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge(QUEUE)


def _start_worker(name: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "DATABASE_URL": os.environ.get("DATABASE_URL", "")
        or "postgres://postgres@127.0.0.1:5432/dunning",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", QUEUE]
    command += ["--pool", "solo", "--without-gossip", "--without-mingle", "-l", "info"]
    command += ["-n", f"{name}@%h"]
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture(scope="module")
def shard_workers(tmp_path_factory):
    """Two worker processes on the `simulation` queue, ready before the tests send."""
    _purge_shards()
    logs = tmp_path_factory.mktemp("shard-workers")
    tag = uuid.uuid4().hex[:6]
    workers = [
        (_start_worker(f"shard{n}-{tag}", logs / f"{n}.log"), logs / f"{n}.log") for n in (1, 2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(" ready." in log.read_text() for _, log in workers):
            assert all(proc.poll() is None for proc, _ in workers), [
                log.read_text()[-2000:] for _, log in workers
            ]
            assert time.monotonic() < deadline, "the shard workers did not start"
            time.sleep(0.2)
        yield workers
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc, _ in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        _purge_shards()


def test_without_workers_on_the_queue_the_run_is_refused_at_once():
    """No worker consumes `simulation` yet (this module starts them later): the command says
    how to start them instead of waiting for ever on shards nobody takes."""
    _purge_shards()
    started = time.monotonic()
    with pytest.raises(SimulationError, match="celery -A config worker -Q simulation"):
        simulate(accounts=4, days=3, seed=7, workers=2)
    assert time.monotonic() - started < 30
    with celery_app.connection_for_write() as connection:
        assert connection.default_channel.client.llen(QUEUE) == 0  # nothing was sent


@pytest.fixture(scope="module")
def single_report(django_db_setup, django_db_blocker) -> dict:
    return _run(django_db_blocker, **BOOK, mix=parse_mix(STRESS_HARD))


def test_a_sharded_run_gives_the_single_process_report(single_report, shard_workers):
    sharded = simulate(**BOOK, mix=parse_mix(STRESS_HARD), workers=2)
    seconds = sharded.pop("_seconds")
    assert len(seconds["shards"]) == 2
    assert as_json(sharded) == as_json(single_report)
    # The book met what makes accounts interact if anything does: the outage, retries,
    # late and duplicate deliveries, every hard case.
    service = single_report["service"]
    assert service["account_management"]["refused_during_outage"] > 0
    assert service["retries"] > 0
    assert service["deliveries"]["duplicates_delivered"] > 0
    assert service["deliveries"]["delayed_1min_to_3h"] > 0
    assert service["late_charge_events_met"] and service["missing_charge_events_met"]
    assert service["old_invoices_first_seen"] > 0


def test_a_shard_run_again_gives_the_same_facts_and_the_merge_any_order(
    single_report, shard_workers
):
    from simulation.tasks import simulate_shard

    mix = parse_mix(STRESS_HARD)
    values = {**BOOK, "mix": mix.as_dict(), "count": 2}
    sent = [
        simulate_shard.apply_async(kwargs={**values, "index": i}, queue=QUEUE) for i in (0, 1, 1)
    ]
    first, second, again = (result.get(timeout=600)["facts"] for result in sent)
    for result in sent:
        result.forget()
    assert second == again  # a redelivered shard gives the same result
    assert merge([first, second]) == merge([second, first])
    book = generate(**BOOK, mix=mix)
    report = service_report(book, merge([second, first]))
    assert as_json(report) == as_json(single_report["service"])
