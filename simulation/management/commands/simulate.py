"""`manage.py simulate`: a book of accounts through the service, against the legacy policy.

By default the run gets a scratch database of its own, made like a test database next to
the configured one (SQLite: `simulation.sqlite3` beside the configured file; PostgreSQL:
`<name>_simulation` on the same server), migrated, and dropped afterwards (`--keep-db` keeps
it for a look in the admin). The configured database is never written to. `--in-place`
runs in the configured database instead, which must hold no accounts yet. `--workers N`
shards the service's run over Celery workers on the Redis broker (`simulation.shard`), each
shard in a scratch database of its own next to its worker's; this process then writes to
no database at all.
"""

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from simulation import simulate
from simulation.mix import Mix, MixError, mix_table, parse_mix
from simulation.report import format_table, write_json
from simulation.scratch import scratch_database, scratch_name
from simulation.service_run import SimulationError


class Command(BaseCommand):
    help = (
        "Simulate a book of subscription accounts through the real service and the legacy "
        "policy, and print the outcome report side by side."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--accounts", type=int, default=1000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--seeds",
            type=int,
            default=5,
            help="run the ablation on this many seeds (seed, seed+1, ...) and print the spread",
        )
        parser.add_argument(
            "--service-seeds",
            type=int,
            default=1,
            help="run the real service on the first this many of those seeds (each takes "
            "minutes; the model's rows take about a second)",
        )
        parser.add_argument(
            "--legacy-retry-days",
            default="",
            metavar="D,D,...",
            help="the legacy cadence, days after the first failure (default: the service's "
            "soft cadence, 1,3,5,8,12,17,23; the seed's model was 3,8,15,22)",
        )
        parser.add_argument("--json", dest="json_path", help="write the report as JSON here")
        parser.add_argument("--html", dest="html_path", help="write the HTML report here")
        parser.add_argument(
            "--mix",
            nargs="+",
            action="extend",
            default=[],
            metavar="KEY=VALUE",
            help="override a behaviour rate (see --show-mix)",
        )
        parser.add_argument(
            "--show-mix", action="store_true", help="print the mix and its sources, and exit"
        )
        parser.add_argument(
            "--in-place",
            action="store_true",
            help="run in the configured database (it must hold no accounts) instead of a "
            "scratch one",
        )
        parser.add_argument(
            "--keep-db", action="store_true", help="keep the scratch database afterwards"
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=0,
            metavar="N",
            help="shard the service's run over N Celery shards on the Redis broker (workers: "
            "celery -A config worker -Q simulation -c 1), each in a scratch database of its "
            "own; the report is the single-process one",
        )

    def handle(self, *args, **options) -> None:
        try:
            mix = parse_mix(options["mix"])
        except MixError as error:
            raise CommandError(str(error)) from error
        if options["show_mix"]:
            self.stdout.write(mix_table(mix))
            return
        if options["accounts"] < 1 or options["days"] < 1 or options["seeds"] < 1:
            raise CommandError("--accounts, --days and --seeds must be at least 1")
        try:
            options["legacy_retry_days"] = tuple(
                float(day) for day in options["legacy_retry_days"].split(",") if day.strip()
            )
        except ValueError as error:
            raise CommandError("--legacy-retry-days takes days, e.g. 3,8,15,22") from error
        if options["service_seeds"] > 1 and options["in_place"]:
            raise CommandError("--service-seeds above 1 needs the scratch database")
        if options["workers"] < 0 or (options["workers"] and options["in_place"]):
            raise CommandError("--workers takes N >= 1, and runs in the shards' databases")
        if options["in_place"] or options["workers"]:
            report = self._run(options, mix)
        else:
            report = self._run_in_scratch_database(options, mix)
        seconds = report.pop("_seconds")
        self.stdout.write(format_table(report))
        service_seeds = len(report.get("ablation", {}).get("service_seeds", [1]))
        account_days = options["accounts"] * options["days"] * service_seeds
        self.stdout.write(
            f"\nran {account_days:,} account-days in {seconds['simulate']:.1f} s "
            f"({account_days / seconds['simulate']:,.0f} account-days/s), converged and "
            f"checked in {seconds['converge']:.1f} s on {connection.vendor}"
        )
        if options["json_path"]:
            write_json(report, options["json_path"])
            self.stdout.write(f"JSON: {options['json_path']}")
        if options["html_path"]:
            from simulation.html import write_html

            write_html(report, options["html_path"])
            self.stdout.write(f"HTML: {options['html_path']}")

    def _run(self, options: dict, mix: Mix) -> dict:
        try:
            return simulate(
                accounts=options["accounts"],
                days=options["days"],
                seed=options["seed"],
                mix=mix,
                progress=lambda text: self.stderr.write(f"  {text}"),
                seeds=options["seeds"],
                service_seeds=options["service_seeds"],
                legacy_retry_days=options["legacy_retry_days"] or None,
                workers=options["workers"],
                # Only ever the scratch database: --in-place runs one service seed.
                reset=lambda: call_command("flush", interactive=False, verbosity=0),
            )
        except SimulationError as error:
            raise CommandError(str(error)) from error

    def _run_in_scratch_database(self, options: dict, mix: Mix) -> dict:
        with scratch_database(scratch_name(), keep=options["keep_db"], say=self.stderr.write):
            return self._run(options, mix)
