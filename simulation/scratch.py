"""A scratch database for a run: made like a test database next to the configured one,
migrated, and dropped afterwards. The configured database is never written to."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection


def scratch_name(suffix: str = "simulation") -> str:
    """SQLite: `<suffix>.sqlite3` beside the configured file; PostgreSQL: `<name>_<suffix>`
    on the same server."""
    configured = settings.DATABASES["default"]
    if connection.vendor == "sqlite":
        return str(Path(str(configured["NAME"])).with_name(f"{suffix}.sqlite3"))
    return f"{configured['NAME']}_{suffix}"


@contextmanager
def scratch_database(
    name: str, *, keep: bool = False, say: Callable[[str], None] | None = None
) -> Iterator[str]:
    """The default connection on a fresh database `name` while the block runs."""
    creation = connection.creation
    original = connection.settings_dict["NAME"]
    saved_test = dict(connection.settings_dict.get("TEST") or {})
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    started = time.perf_counter()
    made = creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    if say:
        say(f"scratch database {made} ready in {time.perf_counter() - started:.1f} s")
    try:
        yield made
    finally:
        creation.destroy_test_db(original, verbosity=0, keepdb=keep)
        connection.settings_dict["TEST"] = saved_test
        if keep and say:
            say(f"kept the scratch database {made}")
