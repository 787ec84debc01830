"""manage.py import_stripe: backfill the mirror from Stripe, then recompute each account."""

import sys
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing_events.stripe_import import ImportOptions
from dunning.backfill import import_and_recompute


def _date(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Import customers, subscriptions, open/uncollectible invoices (with their latest "
        "failure) and recent paid invoices from Stripe (STRIPE_API_KEY, STRIPE_API_BASE), "
        "then recompute every imported account. Idempotent; an interrupted run continues."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--customer", action="append", default=[], help="only this customer (repeatable)"
        )
        parser.add_argument(
            "--created-since",
            type=_date,
            help="only objects created at or after this ISO date (UTC unless given)",
        )
        parser.add_argument(
            "--paid-history-days",
            type=int,
            default=settings.STRIPE_IMPORT_PAID_HISTORY_DAYS,
            help="paid invoices this far back, for the severity rules (default %(default)s)",
        )
        parser.add_argument(
            "--page-size",
            type=int,
            default=settings.STRIPE_IMPORT_PAGE_SIZE,
            choices=range(1, 101),
            metavar="1-100",
            help="objects per list request (default %(default)s)",
        )
        parser.add_argument(
            "--expected-accounts", type=int, help="how many customers to expect, for the ETA"
        )

    def handle(self, *args, **opts) -> None:
        if not settings.STRIPE_API_KEY:
            raise CommandError("STRIPE_API_KEY is not set")
        options = ImportOptions(
            customer_ids=tuple(opts["customer"]),
            created_since=opts["created_since"],
            paid_history_days=opts["paid_history_days"],
            page_size=opts["page_size"],
        )

        def progress(line: str) -> None:
            print(f"import_stripe {line}", file=sys.stderr, flush=True)

        result = import_and_recompute(
            options, progress=progress, expected_accounts=opts["expected_accounts"]
        )
        stats = result.stats
        rate = len(stats.account_ids) / max(result.seconds, 1e-9)
        self.stdout.write(
            f"imported accounts={len(stats.account_ids)} customers={stats.customers} "
            f"subscriptions={stats.subscriptions} invoices={stats.invoices} "
            f"failures={stats.failures}\n"
            f"stripe pages={stats.pages} api_calls={stats.api_calls} retries={stats.retries}\n"
            f"recomputed={result.recomputed} changed={result.changed} "
            f"seconds={result.seconds:.1f} rate={rate:.1f} accounts/s"
        )
