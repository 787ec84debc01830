"""Import (backfill) from Stripe against a loopback fake that paginates and rate-limits."""

import math
import time

import pytest
from django.core.management import call_command

from billing_events import samples
from billing_events.models import Account, Invoice, PaymentAttempt, Subscription
from billing_events.scenarios import StripeCustomer
from billing_events.stripe_import import ImportOptions
from billing_events.stripe_retry import RetryPolicy, call_with_retries, delay_seconds
from dunning.backfill import import_and_recompute
from dunning.models import Decision, DunningCase, StripeImportCursor
from tests.events import deliver
from tests.fake_stripe import API_KEY

pytestmark = pytest.mark.django_db
DAY = 86400


@pytest.fixture
def book(fake_stripe, settings, test_clock):
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake_stripe.url
    return fake_stripe


def fill(fake, n: int, *, now: int, failing_every: int = 3) -> list[str]:
    """n customers, each with an active subscription and a paid invoice last month; every
    `failing_every`-th one has an open renewal invoice whose charge was declined."""
    ids = []
    for i in range(n):
        cus = f"cus_imp{i:05d}"
        ids.append(cus)
        created = now - 400 * DAY + i
        fake.add_customer(cus, created=created, default_payment_method=f"pm_{i}")
        sub = samples.subscription(
            id=f"sub_imp{i:05d}", customer=cus, created=created, items=[("price_basic", 1)]
        )
        sub["start_date"] = created
        fake.add_book_subscription(sub)
        fake.add_book_invoice(
            samples.invoice(
                id=f"in_paid{i:05d}",
                customer=cus,
                created=now - 35 * DAY + i,
                status="paid",
                subscription=sub["id"],
            )
        )
        if i % failing_every == 0:
            invoice_id = f"in_open{i:05d}"
            fake.add_book_invoice(
                samples.invoice(
                    id=invoice_id,
                    customer=cus,
                    created=now - 3 * DAY + i,
                    status="open",
                    attempt_count=1,
                    subscription=sub["id"],
                )
            )
            fake.register_failure(
                invoice_id, decline_code="insufficient_funds", created=now - 3 * DAY + 3600
            )
    return ids


def mirror_rows() -> dict:
    return {
        "accounts": list(Account.objects.order_by("pk").values()),
        "subscriptions": list(Subscription.objects.order_by("pk").values()),
        "invoices": list(Invoice.objects.order_by("pk").values()),
        "attempts": list(PaymentAttempt.objects.order_by("pk").values()),
    }


def engine_rows() -> dict:
    return {
        "cases": list(DunningCase.objects.order_by("pk").values()),
        "decisions": Decision.objects.count(),
    }


def run(page_size: int = 3, **options):
    sleeps: list[float] = []
    lines: list[str] = []
    result = import_and_recompute(
        ImportOptions(page_size=page_size, **options), progress=lines.append, sleep=sleeps.append
    )
    return result, sleeps, lines


def expected_calls(counts: dict[str, int], page_size: int) -> int:
    """Stripe answers one list page per request; an empty list is still one request."""
    return sum(max(1, math.ceil(count / page_size)) for count in counts.values())


def test_import_fills_the_mirror_through_pages_and_429s_and_recomputes(book, test_clock):
    now = int(test_clock.timestamp())
    ids = fill(book, 7, now=now)
    book.rate_limit_every = 4  # every fourth list request is told to slow down
    book.retry_after = "2"

    result, sleeps, lines = run(page_size=3)

    stats = result.stats
    assert (stats.customers, stats.subscriptions, stats.invoices) == (7, 7, 10)
    assert len(stats.account_ids) == 7 and result.recomputed == 7
    assert set(Account.objects.values_list("stripe_customer_id", flat=True)) == set(ids)
    assert Account.objects.get(stripe_customer_id="cus_imp00004").default_payment_method == "pm_4"
    lists = expected_calls(
        {"customers": 7, "subscriptions": 7, "open": 3, "uncollectible": 0, "paid": 7}, 3
    )
    failing_invoices = 3  # each open invoice with attempts is retrieved once, expanded
    assert stats.pages == lists
    assert stats.api_calls == lists + failing_invoices + stats.retries
    assert stats.retries == len(sleeps) >= 2 and all(s >= 2 for s in sleeps)
    failed = PaymentAttempt.objects.get(invoice__stripe_invoice_id="in_open00003")
    assert (failed.decline_code, failed.outcome) == ("insufficient_funds", "failed")
    # the engine opened a case for each failing account, and only for those
    cased = set(DunningCase.objects.values_list("account__stripe_customer_id", flat=True))
    assert cased == {"cus_imp00000", "cus_imp00003", "cus_imp00006"}
    assert any("accounts/s" in line and "pages=" in line for line in lines)
    assert not StripeImportCursor.objects.exists()


def test_a_second_run_changes_nothing(book, test_clock):
    fill(book, 5, now=int(test_clock.timestamp()))
    run()
    mirror = mirror_rows()

    run()
    assert mirror_rows() == mirror
    # The engine needs a second look at a case it just opened (next_review_at moves from
    # the first decision's default to the schedule's): from then on nothing moves at all.
    engine = engine_rows()
    result, _, _ = run()
    assert result.changed == 0
    assert (mirror_rows(), engine_rows()) == (mirror, engine)


def test_an_interrupted_import_continues_from_its_cursor(book, test_clock):
    fill(book, 8, now=int(test_clock.timestamp()))
    pages_seen = []

    def crash_on_third_page(line: str) -> None:
        if "pages=" in line:
            pages_seen.append(line)
            if len(pages_seen) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_and_recompute(ImportOptions(page_size=2), progress=crash_on_third_page)
    cursor = StripeImportCursor.objects.get()
    assert cursor.state["phase"] == "customers" and cursor.state["after"] == "cus_imp00002"
    requests_before = len(book.list_requests())

    result, _, lines = run(page_size=2)

    resumed = book.list_requests()[requests_before]
    assert resumed.query["starting_after"] == "cus_imp00002"
    assert lines[0].startswith("resuming at phase=customers")
    assert result.stats.customers == 8 and len(result.stats.account_ids) == 8
    assert Account.objects.count() == 8 and Subscription.objects.count() == 8
    assert not StripeImportCursor.objects.exists()


def test_options_limit_by_customer_and_created_date(book, test_clock):
    now = int(test_clock.timestamp())
    fill(book, 6, now=now)

    run(customer_ids=("cus_imp00003",))
    assert list(Account.objects.values_list("stripe_customer_id", flat=True)) == ["cus_imp00003"]
    assert set(Invoice.objects.values_list("stripe_invoice_id", flat=True)) == {
        "in_paid00003",
        "in_open00003",
    }

    from core.clock import from_unix

    result, _, _ = run(created_since=from_unix(now - 10 * DAY))
    assert result.stats.customers == 0  # all customers are older
    assert result.stats.invoices == 2  # the open invoices of the last ten days


def test_import_racing_webhooks_converges_in_either_order(book, test_clock, stripe_sender):
    now = int(test_clock.timestamp())
    cus = StripeCustomer(id="cus_race", subscription="sub_race", t=now - 100 * DAY)
    book.add_customer(cus.id, created=cus.t, default_payment_method="pm_old")
    # The invoice was marked uncollectible at now - 2 days, owing 5000.
    uncollectible = samples.invoice(
        id=cus.invoice_id,
        customer=cus.id,
        created=now - 30 * DAY,
        status="uncollectible",
        amount_due=5000,
        status_at=now - 2 * DAY,
        subscription="sub_race",
    )
    book.add_book_invoice(uncollectible)
    # A newer change the import did not see: the customer changed card an hour ago...
    cus.t = now - 3600
    newer_customer = cus.customer_updated("pm_new")
    # ...and an older invoice.updated (before it was marked uncollectible), delivered late.
    cus.t = now - 10 * DAY
    cus.invoice_created[cus.invoice_id] = now - 30 * DAY
    older_invoice = cus.invoice_event("invoice.updated", amount_due=4000, status="open")

    deliver(stripe_sender, newer_customer)
    run()
    deliver(stripe_sender, older_invoice)

    account = Account.objects.get(stripe_customer_id=cus.id)
    invoice = Invoice.objects.get(stripe_invoice_id=cus.invoice_id)
    assert account.default_payment_method == "pm_new"  # the newer webhook wins
    assert (invoice.status, invoice.amount_due) == ("uncollectible", 5000)  # the older loses

    # The other order ends the same: the import after both webhooks.
    Account.objects.all().delete()
    deliver_again = [dict(e, id=e["id"] + "_again") for e in (older_invoice, newer_customer)]
    deliver(stripe_sender, *deliver_again)
    run()
    account = Account.objects.get(stripe_customer_id=cus.id)
    invoice = Invoice.objects.get(stripe_invoice_id=cus.invoice_id)
    assert account.default_payment_method == "pm_new"
    assert (invoice.status, invoice.amount_due) == ("uncollectible", 5000)


def test_the_command_prints_a_summary(book, test_clock, capsys):
    fill(book, 4, now=int(test_clock.timestamp()))
    call_command("import_stripe", "--page-size", "2")
    out, err = capsys.readouterr()
    assert "imported accounts=4 customers=4 subscriptions=4 invoices=6" in out
    assert "api_calls=" in out and "accounts/s" in out
    assert "import_stripe phase=customers pages=1" in err


@pytest.mark.parametrize(
    ("status", "headers", "retried"),
    [
        (429, {}, True),
        (500, {}, True),
        (503, {"Stripe-Should-Retry": "false"}, False),
        (400, {"Stripe-Should-Retry": "true"}, True),
        (400, {}, False),
        (404, {}, False),
    ],
)
def test_backoff_retries_what_stripe_says_to(status, headers, retried):
    import stripe

    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise stripe.APIError("nope", http_status=status, headers=headers)
        return "ok"

    policy = RetryPolicy(sleep=sleeps.append, jitter=lambda: 0.5)
    if retried:
        assert call_with_retries(flaky, policy) == "ok" and len(sleeps) == 1
    else:
        with pytest.raises(stripe.APIError):
            call_with_retries(flaky, policy)
        assert sleeps == []


def test_backoff_grows_is_bounded_and_honours_retry_after():
    import stripe

    policy = RetryPolicy(base_seconds=0.5, cap_seconds=30, jitter=lambda: 1.0, sleep=time.sleep)
    plain = stripe.RateLimitError("slow", http_status=429)
    assert [delay_seconds(plain, n, policy) for n in range(8)] == [
        0.5,
        1,
        2,
        4,
        8,
        16,
        30,
        30,
    ]
    told = stripe.RateLimitError("slow", http_status=429, headers={"Retry-After": "7"})
    assert delay_seconds(told, 0, policy) == 7
    assert delay_seconds(told, 0, RetryPolicy(cap_seconds=5)) == 5
