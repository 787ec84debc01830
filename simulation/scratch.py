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


class GrowingStatistics:
    """The scratch database's planner statistics kept up as it grows from empty, as
    autovacuum's analyze would on a server where it is on (on this machine's it is off).
    Without them PostgreSQL plans the hot statements as for empty tables: at 100,000
    accounts the snapshot read took 10-20 ms instead of well under one, and ANALYZE run by
    hand in the middle of a sharded run doubled that shard's events a minute (2,647 ->
    5,703; the other shard, not analysed, stayed at 2,303). ANALYZE samples a bounded
    number of rows per table, so each costs about the same at any size; one each time
    the events stored grew by a fifth keeps them few (about 40 in a 100,000-account run)."""

    FIRST = 500
    GROWTH = 1.2

    def __init__(self) -> None:
        self.next_at = self.FIRST
        self.runs = 0

    def grown_to(self, events: int) -> None:
        if events < self.next_at or connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        self.runs += 1
        self.next_at = int(events * self.GROWTH)
