"""`manage.py backtest --policy FILE|VERSION --since DATE [--until DATE] [--json PATH]
[--html PATH]`: the window's stored Stripe events replayed under the active policy and under
the candidate, each in a scratch database of its own (`backtest_<configured name>_<side>`,
made like a test database, migrated, dropped afterwards). The configured database is only
read."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from simulation.backtest import BacktestError, backtest
from simulation.backtest.html import write_html
from simulation.backtest.policies import active_document, candidate_document
from simulation.backtest.report import format_table, write_json


def scratch_name(side: str) -> str:
    configured = str(settings.DATABASES["default"]["NAME"])
    if connection.vendor == "sqlite":
        path = Path(configured)
        return str(path.with_name(f"backtest_{path.stem}_{side}.sqlite3"))
    return f"backtest_{configured}_{side}"


@contextmanager
def scratch_database(side: str, *, keep: bool = False) -> Iterator[str]:
    """The default connection on a new, migrated scratch database, dropped afterwards
    unless `keep`."""
    creation = connection.creation
    original = connection.settings_dict["NAME"]
    saved_test = dict(connection.settings_dict.get("TEST") or {})
    connection.settings_dict.setdefault("TEST", {})["NAME"] = scratch_name(side)
    name = creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield name
    finally:
        creation.destroy_test_db(original, verbosity=0, keepdb=keep)
        connection.settings_dict["TEST"] = saved_test


def parse_day(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise CommandError(f"{text!r}: give a date or time, e.g. 2026-09-01") from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Command(BaseCommand):
    help = (
        "Replay the stored Stripe events of a window under the active policy and under a "
        "candidate, and report the accounts whose outcome would have changed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--policy", required=True, help="the candidate: a policy JSON file or a version"
        )
        parser.add_argument("--since", required=True, help="start of the window (UTC)")
        parser.add_argument("--until", help="end of the window (UTC; default: the last event)")
        parser.add_argument("--json", dest="json_path", help="write the report as JSON here")
        parser.add_argument("--html", dest="html_path", help="write the report as HTML here")
        parser.add_argument(
            "--keep-db", action="store_true", help="keep the two scratch databases afterwards"
        )

    def handle(self, *args, **options) -> None:
        since = parse_day(options["since"])
        until = parse_day(options["until"]) if options["until"] else None
        if until is not None and until <= since:
            raise CommandError("--until must come after --since")
        try:
            candidate, candidate_text = candidate_document(options["policy"])
            active, active_text = active_document()
            report = backtest(
                since=since,
                until=until,
                documents={"active": active, "candidate": candidate},
                policies={"active": active_text, "candidate": candidate_text},
                scratch=lambda side: scratch_database(side, keep=options["keep_db"]),
                progress=lambda text: self.stderr.write(f"  {text}"),
            )
        except BacktestError as error:
            raise CommandError(str(error)) from error
        seconds = report.pop("_seconds")
        self.stdout.write(format_table(report))
        replayed = report["events"]["replayed"]
        for side, spent in seconds.items():
            self.stdout.write(
                f"{side}: {replayed:,} stored events replayed in {spent:.1f} s "
                f"({replayed / spent:,.1f} events/s)"
            )
        if options["json_path"]:
            write_json(report, options["json_path"])
            self.stdout.write(f"JSON: {options['json_path']}")
        if options["html_path"]:
            write_html(report, options["html_path"])
            self.stdout.write(f"HTML: {options['html_path']}")
