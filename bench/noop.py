"""The retry bench's baseline task, imported by its worker (`--include bench.noop`)."""

from config.celery import app


@app.task(name="bench.noop")
def noop() -> None:
    """A Celery task that does nothing."""
