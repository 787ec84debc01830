import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("dunning")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Not an app of its own, so not found by the line above.
app.autodiscover_tasks(["dunning.intake"])


@signals.task_prerun.connect
@signals.task_postrun.connect
def connections_between_tasks(task=None, **_) -> None:
    """Between tasks as between requests: a connection past its age or broken by an error
    is closed (the next query opens a new one); a live one is kept (CELERY_DB_REUSE_MAX).
    Not for a task run eagerly, inside its caller's transaction."""
    if task is not None and task.request.is_eager:
        return
    from django.db import close_old_connections

    close_old_connections()
