"""manage.py import_legacy_flags FILE.csv: the legacy verdicts, for the day-one comparison."""

from django.core.management.base import BaseCommand, CommandError

from dunning.legacy import LegacyFileError, import_legacy_file


class Command(BaseCommand):
    help = (
        "Store the legacy bad_debt/banned flags (CSV header: customer_id,bad_debt,banned,since) "
        "for the shadow report's day-one view. All rows or none; safe to run again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file")

    def handle(self, *args, **opts) -> None:
        try:
            counts = import_legacy_file(opts["file"])
        except (LegacyFileError, OSError) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"legacy verdicts created={counts['created']} updated={counts['updated']} "
            f"unchanged={counts['unchanged']}"
        )
