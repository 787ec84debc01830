from django.core.management.base import BaseCommand, CommandError

from billing_events import polling


class Command(BaseCommand):
    help = (
        "List Stripe's events since the last listing and store the ones no webhook delivered "
        "(the beat task poll_stripe_events, run once)."
    )

    def handle(self, *args, **options):
        if not polling.enabled():
            raise CommandError("STRIPE_API_KEY is not set: there is no Stripe to ask")
        report = polling.poll_once()
        window = (
            f"{report.window_start.isoformat()} .. {report.window_end.isoformat()}"
            if report.window_start and report.window_end
            else "none"
        )
        self.stdout.write(
            f"window {window}: listed {report.listed}, recovered {report.recovered}, "
            f"rejected {report.rejected}" + (f" ({report.skipped})" if report.skipped else "")
        )
        if report.skipped.startswith("Stripe answered"):
            raise CommandError(report.skipped)
