import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dunning.demo import account_lines, actual_outcome, outcome_matches, run_demo

DEMO_SECRET = "whsec_demo_only"


class Command(BaseCommand):
    help = "Ingest a realistic batch of signed Stripe events end to end and print what happened."

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=16)
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, customers: int, seed: int, **options):
        if not settings.STRIPE_WEBHOOK_SECRETS:
            settings.STRIPE_WEBHOOK_SECRETS = [DEMO_SECRET]
        result = run_demo(
            customers=customers,
            seed=seed,
            secret=settings.STRIPE_WEBHOOK_SECRETS[0],
            now=int(time.time()),
        )
        out = self.stdout.write
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        tasks = "in-process" if settings.CELERY_TASK_ALWAYS_EAGER else "Celery workers"
        out(f"database: {engine}, tasks: {tasks}")
        out(f"delivered {result.delivered} signed events, shuffled, 1 in 5 delivered twice")
        out(
            "webhook answers: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(result.responses.items()))
        )
        out(
            "stored events:   "
            + ", ".join(f"{k}: {v}" for k, v in sorted(result.event_statuses.items()))
        )
        out("")
        out("story per customer:")
        for customer, story in sorted(result.stories.items()):
            out(f"  {customer}: {story}")
        out("")
        out("mirror stores after processing:")
        for line in account_lines():
            out("  " + line)
        out("")
        out("expected and actual outcome per customer:")
        wrong = []
        for customer, expected in sorted(result.expected.items()):
            actual = actual_outcome(customer)
            ok = outcome_matches(expected, actual)
            actual_text = (
                actual.describe()
                if not actual.may_charge
                else (
                    actual.state
                    + (f" ({actual.resolution})" if actual.resolution else "")
                    + ", charged"
                )
            )
            out(
                f"  {'ok  ' if ok else 'DIFF'} {customer}: expected {expected.describe()}; "
                f"actual {actual_text}"
            )
            if not ok:
                wrong.append(customer)
        self._print_notices(out)
        if wrong:
            raise CommandError(
                f"{len(wrong)} demo customer(s) did not end as their story says: "
                + ", ".join(wrong)
            )

    def _print_notices(self, out) -> None:
        from core import clock
        from dunning.notifications.preview import print_through_console

        out("")
        out(
            "messages to customers, through the console email backend (status `shadow`: "
            "what shadow mode would have sent; `scheduled`: waiting for its day; `sent`: gone):"
        )
        self.stdout.flush()
        print_through_console(clock.now(), self.stdout)
