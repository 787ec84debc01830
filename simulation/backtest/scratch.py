"""The backtest's scratch databases, and each replay's turn on its own.

One database is made and migrated like a test database (`backtest_<configured name>`),
then cloned once per side (`backtest_<configured name>_<side>`): PostgreSQL's `CREATE
DATABASE … TEMPLATE`, a file copy on SQLite. Migrating once instead of once per side
saves one full migrate (most of the set-up time). The template is dropped at the end; the
sides' clones too, unless kept for a look in the admin.

A side's replay runs on its clone either in this process (`jobs=1`) or in a forked child
of its own, both sides at once (a replay is one connection doing one thing at a time, so
two cores run two replays). A child inherits the history read before the fork and sends
back only its `Replay` (outcomes and counts) through a pipe.
"""

import multiprocessing
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from simulation.backtest.policies import BacktestError


def template_name() -> str:
    configured = str(settings.DATABASES["default"]["NAME"])
    if connection.vendor == "sqlite":
        path = Path(configured)
        return str(path.with_name(f"backtest_{path.stem}.sqlite3"))
    return f"backtest_{configured}"


@contextmanager
def scratch_databases(sides: tuple[str, ...], *, keep: bool = False) -> Iterator[dict[str, str]]:
    """Side -> the name of its new, migrated scratch database. The connection is left
    closed on the template; `on_database` points it at a side's."""
    creation = connection.creation
    original = connection.settings_dict["NAME"]
    saved_test = dict(connection.settings_dict.get("TEST") or {})
    connection.settings_dict.setdefault("TEST", {})["NAME"] = template_name()
    template = creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    names: dict[str, str] = {}
    try:
        for side in sides:
            # Closes the connection first: a template must have no session open on it.
            creation.clone_test_db(suffix=side, verbosity=0, autoclobber=True)
            names[side] = creation.get_test_db_clone_settings(side)["NAME"]
        connection.close()
        yield names
    finally:
        connection.close()
        connection.settings_dict["NAME"] = template
        if not keep:
            for name in names.values():
                creation._destroy_test_db(name, verbosity=0)
        # Drops the template (empty, never worth keeping) and points back at `original`.
        creation.destroy_test_db(original, verbosity=0)
        connection.settings_dict["TEST"] = saved_test


@contextmanager
def on_database(name: str) -> Iterator[None]:
    """The default connection on database `name` meanwhile (closed on the way in and out:
    Django reconnects with the settings it then finds)."""
    saved = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = name
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = saved


def run_sides(
    names: dict[str, str], work: Callable[[str], Any], *, jobs: int = 2
) -> dict[str, Any]:
    """`work(side)` on each side's database: one after the other in this process with
    `jobs=1`, else each in a forked process of its own, all at once."""
    if jobs <= 1 or len(names) == 1:
        results = {}
        for side, name in names.items():
            with on_database(name):
                results[side] = work(side)
        return results
    # A forked child must not share this process's database socket: closed before the
    # fork, each child opens its own on its side's database.
    connection.close()
    context = multiprocessing.get_context("fork")
    children = {}
    for side, name in names.items():
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(sender, name, work, side), daemon=True)
        process.start()
        sender.close()
        children[side] = (process, receiver)
    results, failures = {}, []
    for side, (process, receiver) in children.items():
        try:
            status, value = receiver.recv()
        except EOFError:
            status, value = "error", "its process ended without an answer"
        process.join()
        if status == "ok":
            results[side] = value
        else:
            failures.append(f"the {side} replay failed: {value}")
    if failures:
        raise BacktestError("\n".join(failures))
    return results


def _child(sender, name: str, work: Callable[[str], Any], side: str) -> None:
    try:
        connection.settings_dict["NAME"] = name  # closed before the fork: opens on `name`
        outcome: tuple[str, Any] = ("ok", work(side))
    except BaseException:  # noqa: BLE001 - every failure goes back to the parent, as text
        outcome = ("error", traceback.format_exc())
    finally:
        connection.close()
    sender.send(outcome)
    sender.close()
