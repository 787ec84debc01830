"""Log formatting and redaction.

- `RedactingFilter` masks card numbers, secret keys and sensitive `key=value` pairs in a
  record's message, its `extra` fields and its traceback (the scrubber of `config.sentry`).
  It sits on the console handler, so whatever a module logs, the line is masked.
- `JsonFormatter` writes one JSON object per line (LOG_FORMAT=json): time (UTC, ISO 8601),
  level, logger, message, every `extra` field, and the traceback as `exc_info`.
- Celery workers install their own root handlers; `celery_after_setup_logger` (connected
  here) puts the same filter and format on them, so worker lines are masked too.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any

from config.sentry import SENSITIVE_KEY, scrub, scrub_text

# What every LogRecord carries; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, __file__, 0, "", None, None))
) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRS and not key.startswith("_")
    }


class RedactingFilter(logging.Filter):
    """Masks card data and secrets in the record itself (message, extra, traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = scrub_text(message)
        record.args = None
        for key, value in extra_fields(record).items():
            setattr(record, key, "[Filtered]" if SENSITIVE_KEY.search(key) else scrub(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        record._redacted = True
        return True


def _current_task() -> Any:
    try:
        from celery import current_task
    except ImportError:  # pragma: no cover - celery is a dependency
        return None
    task = current_task._get_current_object() if current_task else None
    return task if task is not None and getattr(task.request, "id", None) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        task = _current_task()
        if task is not None:
            entry.setdefault("task_name", task.name)
            entry.setdefault("task_id", task.request.id)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


KV_FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def celery_after_setup_logger(logger: logging.Logger | None = None, **kwargs: Any) -> None:
    """Celery replaced the root handlers with its own: mask and format them like ours."""
    from django.conf import settings

    if logger is None:
        return
    log_format = getattr(settings, "LOG_FORMAT", "kv")
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())


def _connect_celery() -> None:
    try:
        from celery import signals
    except ImportError:  # pragma: no cover - celery is a dependency
        return
    for signal in (signals.after_setup_logger, signals.after_setup_task_logger):
        signal.connect(
            celery_after_setup_logger, weak=False, dispatch_uid=f"config.logging.{signal.name}"
        )


_connect_celery()
