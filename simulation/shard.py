"""`--workers N`: the book's accounts sharded over Celery workers on the real broker.

Shard `index` of `count` runs the accounts whose index % count == index through the same
real path as the single-process run (signed webhooks, ingest, processing, engine, outbox,
Account Management on loopback, the test clock), in a scratch database of its own next to
the worker's configured one, and hands back its facts (`facts.collect`); the coordinator
merges them and measures once (`facts.merge`, `measure.service_report`). The report is
the single-process one byte for byte (tested): every account's run is the same whichever
accounts share it, because

- the delivery noise (delays, duplicates, order within an hour) and the event ids are
  drawn per account (`stripe_side.noise`), not from one stream for the book;
- the clock stops where the shard's own accounts have something due, and the test
  clock walks from due moment to due moment, so a stop another account causes changes
  nothing for this one (an event is delivered at the first whole hour after it is due,
  a review or retry runs at its own moment, in either run);
- the Account Management outage is the book's (drawn with it): every shard's stub goes
  down and comes back at the same stops;
- the convergence check recomputes each account on its own, and every book-wide figure
  (daily levels, restricted days, counts) is a sum over accounts, merged as one; the
  rest (rates, medians, limbo, first decisions) is computed from the merged records.

The shard task takes plain values (seed, accounts, days, the mix's rates, index, count)
and draws the book itself, so its message is small and its result depends on nothing
else: a redelivered shard (acks_late; a worker lost mid-run) gives the same result again.
Each execution gets a database name of its own, so two copies of one shard running at
once never share a database. Results come back through a Redis result backend on the
broker's own Redis (the task's, not the app's: the service's tasks keep storing none),
because every worker already reaches the broker, on whichever machine it runs, while a
results table would need every machine to reach one database; the coordinator deletes
each result once read.
"""

import time
import uuid
from collections.abc import Callable

from simulation.book import Book
from simulation.facts import collect, merge
from simulation.mix import Mix
from simulation.scratch import scratch_database, scratch_name
from simulation.service_run import SimulationError

QUEUE = "simulation"  # shard workers: `celery -A config worker -Q simulation --pool solo`


def run_shard(*, accounts: int, days: int, seed: int, mix: dict, index: int, count: int) -> dict:
    """One shard, in this process, in a scratch database of its own: its facts and times."""
    from simulation.generator import generate
    from simulation.service import run_service

    name = scratch_name(f"simulation_s{index}_{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    with scratch_database(name):
        made = time.perf_counter() - started
        book = generate(accounts=accounts, days=days, seed=seed, mix=Mix(**mix))
        run = run_service(book, shard=(index, count))
        facts = collect(book, run)
    return {"facts": facts, "seconds": {**run.seconds, "database": made}}


def run_sharded(
    book: Book, workers: int, *, progress: Callable[[str], None] | None = None
) -> tuple[dict, dict]:
    """The book's service run over `workers` shards on the broker's workers (queue
    `simulation`): (merged facts, seconds)."""
    from simulation.tasks import simulate_shard

    broker = str(simulate_shard.app.conf.broker_url or "")
    if not broker.startswith(("redis://", "rediss://")):
        raise SimulationError(
            "--workers needs the Redis broker (CELERY_BROKER_URL) and workers on it: "
            f"celery -A config worker -Q {QUEUE} --pool solo"
        )
    if not _listening(simulate_shard.app):
        # Without one, the shards would wait in the queue and the command with them, silently.
        raise SimulationError(
            f"--workers needs workers on the queue '{QUEUE}': none answered; start them with "
            f"celery -A config worker -Q {QUEUE} --pool solo"
        )
    run_id = uuid.uuid4().hex[:12]
    values = {
        "accounts": len(book.accounts),
        "days": book.days,
        "seed": book.seed,
        "mix": book.mix.as_dict(),
        "count": workers,
    }
    started = time.perf_counter()
    pending = [
        simulate_shard.apply_async(
            kwargs={**values, "index": index},
            task_id=f"simulation-shard-{run_id}-{index}-of-{workers}",
            queue=QUEUE,
        )
        for index in range(workers)
    ]
    shards = []
    for index, result in enumerate(pending):
        shards.append(result.get(disable_sync_subtasks=False))  # a shard's error is raised
        result.forget()
        if progress:
            progress(f"shard {index + 1}/{workers} in after {time.perf_counter() - started:.0f} s")
    seconds = {
        # The sharded phase as a whole: scratch databases, runs and convergence.
        "simulate": time.perf_counter() - started,
        "converge": max(shard["seconds"]["converge"] for shard in shards),
        "shards": [shard["seconds"] for shard in shards],
    }
    return merge([shard["facts"] for shard in shards]), seconds


def _listening(app, timeout: float = 3.0) -> bool:
    """Whether any worker answers that it consumes the simulation queue."""
    answers = app.control.inspect(timeout=timeout).active_queues() or {}
    return any(queue.get("name") == QUEUE for queues in answers.values() for queue in queues)
