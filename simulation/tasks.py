"""The simulator's one Celery task: a shard of a book through the service (`shard`)."""

from functools import cache

from celery import Task, shared_task
from celery.backends.redis import RedisBackend

from simulation.shard import run_shard


@cache
def _backend(app, url: str) -> RedisBackend:
    return RedisBackend(app=app, url=url)


class ShardTask(Task):
    """Stores its result in Redis on the broker's own URL; the app's other tasks store
    none (no result backend is configured for the service)."""

    @property
    def backend(self) -> RedisBackend:
        return _backend(self.app, str(self.app.conf.broker_url))


@shared_task(
    base=ShardTask,
    name="simulation.tasks.simulate_shard",
    acks_late=True,
    reject_on_worker_lost=True,
)
def simulate_shard(
    *, accounts: int, days: int, seed: int, mix: dict, index: int, count: int
) -> dict:
    return run_shard(accounts=accounts, days=days, seed=seed, mix=mix, index=index, count=count)
