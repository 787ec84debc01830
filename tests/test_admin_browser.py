"""The main support path in a real browser: headless Chromium (Debian's package) driven by
Playwright against the live server.

Needs `apt-get install chromium` and `pip install playwright` (never `playwright install`:
the browser is the system one); skipped when either is missing.
"""

import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")

from django.contrib.auth.models import Group  # noqa: E402

from billing_events.scenarios import StripeCustomer  # noqa: E402
from dunning.models import DunningCase, SupportAction  # noqa: E402
from tests.dunning_helpers import account_of, case_of, deliver_now  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
CASES = "/admin/dunning/dunningcase/"
# Looked at by a person (and kept by CI as an artifact): one message as the customer sees it.
SCREENSHOT = Path(__file__).parent / "artifacts" / "notice-preview.png"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no browser at {CHROMIUM}"),
    pytest.mark.django_db(transaction=True),
]


@contextmanager
def chromium_page():
    """A page in headless Chromium. Playwright's sync API runs an event loop in this
    thread, so Django's ORM must not be used while the page is open (it refuses to run
    inside an event loop): set up before, check the database after."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def test_support_finds_a_case_reads_why_and_recomputes(
    live_server, stripe_sender, test_clock, django_user_model
):
    django_user_model.objects.create_superuser("root", "root@example.com", "a-long-password")
    for n in (1, 2):
        deliver_now(
            stripe_sender,
            StripeCustomer(id=f"cus_browser0{n}", subscription=f"sub_browser0{n}"),
            lambda c: c.charge_event("charge.failed", f"ch_{c.id}", decline_code="do_not_honor"),
            lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
        )
    cus = StripeCustomer(id="cus_browser01")
    case = case_of(cus)
    summary = case.last_decision.summary
    DunningCase.objects.filter(pk=case.pk).update(level="none")  # drift for the recompute
    expect = sync_api.expect

    with chromium_page() as page:
        # Log in.
        page.goto(f"{live_server.url}/admin/login/?next={CASES}")
        page.fill("#id_username", "root")
        page.fill("#id_password", "a-long-password")
        page.click("input[type=submit]")
        expect(page.locator("#changelist")).to_be_visible()

        # Find the case by the customer id and open it: the explanation is there.
        page.fill("#searchbar", cus.id)
        page.press("#searchbar", "Enter")
        expect(page).to_have_url(re.compile(rf"\?q={cus.id}$"))
        rows = page.locator("#result_list tbody tr")
        expect(rows).to_have_count(1)
        rows.first.locator("th a").click()
        expect(page.locator(".decision-summary")).to_have_text(summary)
        expect(page.locator("body")).to_contain_text("PAYMENT_FAILED")

        # Back to the list, run "Recompute" on it and see the result.
        page.go_back()
        rows.first.locator("input.action-select").check()
        page.select_option("select[name=action]", "recompute")
        page.click("button[name=index]")
        expect(page.locator(".messagelist .success")).to_contain_text(
            "Recomputed 1 account(s): 1 changed"
        )

    action = SupportAction.objects.get()
    assert (action.actor, action.action, action.account_id) == (
        "root",
        "recompute",
        case.account_id,
    )
    assert case_of(cus).level == "notice"


def test_support_previews_a_customer_message_as_it_would_look(
    live_server, stripe_sender, test_clock, django_user_model
):
    reader = django_user_model.objects.create_user(
        "rita", "rita@example.com", "a-long-password", is_staff=True
    )
    reader.groups.add(Group.objects.get_or_create(name="support_read")[0])
    cus = StripeCustomer(id="cus_browser_preview", subscription="sub_browser_preview")
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", f"ch_{c.id}", decline_code="expired_card"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    account = account_of(cus)
    account.email = "jo@example.com"  # as Stripe would have it: the preview shows the address
    account.save(update_fields=["email"])
    preview = f"/admin/dunning/customernotice/preview/{account.pk}/"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    expect = sync_api.expect

    with chromium_page() as page:
        page.goto(f"{live_server.url}/admin/login/?next={preview}")
        page.fill("#id_username", "rita")
        page.fill("#id_password", "a-long-password")
        page.click("input[type=submit]")

        frame = page.locator("iframe.notice-html").first
        expect(frame).to_be_visible()
        body = page.frame_locator("iframe.notice-html").first.locator("body")
        expect(body).to_be_visible()
        text = body.inner_text()
        frame.screenshot(path=str(SCREENSHOT))

    assert text.strip()
    assert SCREENSHOT.stat().st_size > 0
