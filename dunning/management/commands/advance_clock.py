from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from dunning import test_clock


class Command(BaseCommand):
    help = "Advance the test clock (DUNNING_TEST_CLOCK=1) and run what became due."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--to", help="ISO 8601 time with a timezone, e.g. 2026-12-01T00:00Z")
        group.add_argument("--seconds", type=int)

    def handle(self, *args, to: str | None, seconds: int | None, **options):
        target = parse_datetime(to) if to else None
        if to and target is None:
            raise CommandError(f"not an ISO 8601 time: {to}")
        try:
            report = test_clock.advance(to=target, seconds=seconds)
        except test_clock.TestClockError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"test clock {report.previous.isoformat()} -> {report.now.isoformat()}; ran "
            + ", ".join(f"{name}: {count}" for name, count in report.ran.items())
        )
