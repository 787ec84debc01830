"""Customer notices where support looks: the API list, the timeline, the admin (rows and the
preview of every message for an account), /metrics and the shadow report (issue #13)."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils.html import escape
from rest_framework.test import APIClient

from billing_events import samples
from billing_events.models import Account, Invoice
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import rollout
from dunning import test_clock as clock_service
from dunning.models import CustomerNotice
from tests.dunning_helpers import account_of, case_of, deliver_now
from tests.test_metrics import scrape, value
from tests.test_support_api import _client_for, _user, failing_customer, url

pytestmark = pytest.mark.django_db
Kind, Status = CustomerNotice.Kind, CustomerNotice.Status
FIELDS = {
    "id",
    "kind",
    "key",
    "status",
    "channel",
    "due_at",
    "claimed_at",
    "sent_at",
    "recipient",
    "language",
    "subject",
    "reason",
    "case_id",
}


@pytest.fixture
def reader(db) -> APIClient:
    return _client_for(_user("rita", "support_read"))


def customer_with_an_address(sender, customer_id: str, locales: list[str]) -> StripeCustomer:
    """A customer Stripe knows the email and preferred_locales of, then a failed payment."""
    cus = StripeCustomer(id=customer_id, subscription=f"sub_{customer_id}")

    def created(c: StripeCustomer) -> dict:
        obj = samples.customer(id=c.id, created=c.t)
        obj["preferred_locales"] = locales
        return samples.event("customer.updated", obj, created=c.t)

    deliver_now(sender, cus, created)
    return failing_customer(sender, customer_id)


def notice(account: Account, key: str, **fields) -> CustomerNotice:
    now = clock.now()
    values = {
        "kind": Kind.PAYMENT_FAILED,
        "status": Status.SCHEDULED,
        "channel": "email",
        "due_at": now,
        "created_at": now,
        "facts": {"amount": 4900, "currency": "usd", "decline_class": "soft"},
    }
    return CustomerNotice.objects.create(account=account, key=key, **{**values, **fields})


# --- GET /api/v1/accounts/{id}/notifications/ ---------------------------------------------
def test_the_list_is_newest_first_with_what_support_needs(reader, test_clock):
    account = Account.objects.create(stripe_customer_id="cus_list", email="ana@example.com")
    now = clock.now()
    sent = notice(
        account,
        "payment_failed:inv1:soft",
        status=Status.SENT,
        due_at=now - timedelta(days=5),
        claimed_at=now - timedelta(days=2),
        sent_at=now - timedelta(days=2),
        recipient="ana@example.com",
        language="fr",
        subject="Votre paiement a échoué",
    )
    withdrawn = notice(
        account,
        "step_ahead:inv1:premium_restricted",
        kind=Kind.STEP_AHEAD,
        status=Status.WITHDRAWN,
        due_at=now - timedelta(days=1),
        reason="no longer true: paid",
    )
    coming = notice(account, "final_notice:inv1", kind=Kind.FINAL_NOTICE, due_at=now + timedelta(3))
    notice(Account.objects.create(stripe_customer_id="cus_other"), "payment_failed:inv9:soft")

    response = reader.get(url(account.pk, "notifications"))

    assert response.status_code == 200
    body = response.json()
    assert [row["id"] for row in body["results"]] == [coming.pk, withdrawn.pk, sent.pk]
    assert all(set(row) == FIELDS for row in body["results"])
    assert body["results"][2] == {
        "id": sent.pk,
        "kind": "payment_failed",
        "key": "payment_failed:inv1:soft",
        "status": "sent",
        "channel": "email",
        "due_at": "2026-10-28T09:00:00Z",
        "claimed_at": "2026-10-31T09:00:00Z",
        "sent_at": "2026-10-31T09:00:00Z",
        "recipient": "ana@example.com",
        "language": "fr",
        "subject": "Votre paiement a échoué",
        "reason": "",
        "case_id": None,
    }
    assert body["results"][1]["reason"] == "no longer true: paid"


def test_the_list_shows_what_the_engine_decided_and_sent(reader, stripe_sender, test_clock):
    cus = customer_with_an_address(stripe_sender, "cus_told", ["fr-FR"])

    rows = reader.get(url(account_of(cus).pk, "notifications")).json()["results"]

    by_kind = {row["kind"]: row for row in rows}
    failed = by_kind["payment_failed"]
    assert (failed["status"], failed["recipient"], failed["case_id"]) == (
        "sent",
        "cus_told@example.com",
        case_of(cus).pk,
    )
    assert failed["language"] == "fr"
    assert by_kind["step_ahead"]["status"] == "scheduled"  # days before premium pauses


def test_the_list_pages_by_fifty(reader, test_clock):
    account = Account.objects.create(stripe_customer_id="cus_many")
    for n in range(51):
        notice(account, f"card_expiring:2026-12-{n:02d}", kind=Kind.CARD_EXPIRING)

    first = reader.get(url(account.pk, "notifications")).json()
    second = reader.get(url(account.pk, "notifications"), {"page": 2}).json()

    assert (first["count"], len(first["results"]), len(second["results"])) == (51, 50, 1)


def test_an_unknown_account_is_a_404(reader):
    response = reader.get(url(999_999, "notifications"))

    assert response.status_code == 404
    assert response.json() == {"detail": "No account with this id."}


@pytest.mark.parametrize(
    "query, field",
    [({"kind": "sent"}, "kind"), ({"page": "0"}, "page"), ({"page": "x"}, "page")],
)
def test_a_bad_query_parameter_is_a_clean_400(reader, query, field):
    account = Account.objects.create(stripe_customer_id="cus_q")

    response = reader.get(url(account.pk, "notifications"), query)

    assert response.status_code == 400
    assert set(response.json()) == {field}


def test_it_needs_a_support_role(db):
    account = Account.objects.create(stripe_customer_id="cus_private")
    no_role = _client_for(_user("nobody", is_staff=True))

    assert no_role.get(url(account.pk, "notifications")).status_code == 403
    assert APIClient().get(url(account.pk, "notifications")).status_code == 401


# --- the timeline -------------------------------------------------------------------------
def test_the_timeline_places_each_notice_where_it_stands(reader, test_clock):
    account = Account.objects.create(stripe_customer_id="cus_timeline")
    now = clock.now()
    sent = notice(
        account,
        "payment_failed:inv1:soft",
        status=Status.SENT,
        due_at=now - timedelta(days=3),
        claimed_at=now - timedelta(days=2),
        sent_at=now - timedelta(days=1),
        subject="Your payment failed",
    )
    sending = notice(
        account,
        "step_ahead:inv1:read_only",
        kind=Kind.STEP_AHEAD,
        status=Status.SENDING,
        due_at=now - timedelta(hours=5),
        claimed_at=now - timedelta(hours=4),
    )
    skipped = notice(
        account,
        "final_notice:inv1",
        kind=Kind.FINAL_NOTICE,
        status=Status.SKIPPED,
        due_at=now - timedelta(hours=1),
        reason="the customer has no email address",
    )

    entries = reader.get(url(account.pk, "timeline")).json()["entries"]

    assert [(e["kind"], e["detail"]["notice_id"]) for e in entries] == [
        ("notice", sent.pk),
        ("notice", sending.pk),
        ("notice", skipped.pk),
    ]
    assert [e["at"] for e in entries] == [
        "2026-11-01T09:00:00Z",  # sent
        "2026-11-02T05:00:00Z",  # taken for sending
        "2026-11-02T08:00:00Z",  # due (never sent)
    ]
    detail = entries[0]["detail"]
    assert (detail["kind"], detail["channel"], detail["status"], detail["subject"]) == (
        "payment_failed",
        "email",
        "sent",
        "Your payment failed",
    )
    assert entries[2]["detail"]["reason"] == "the customer has no email address"
    assert "final_notice by email: skipped" in entries[2]["summary"]


# --- /metrics -----------------------------------------------------------------------------
def test_metrics_count_notices_by_kind_and_status(client, test_clock):
    account = Account.objects.create(stripe_customer_id="cus_metrics_notices")
    notice(account, "a", status=Status.SENT)
    notice(account, "b", status=Status.SENT)
    notice(account, "c", status=Status.FAILED)
    notice(account, "d", kind=Kind.CARD_EXPIRING, status=Status.SHADOW)

    samples_ = scrape(client)

    family = "dunning_customer_notices"
    assert value(samples_, family, kind="payment_failed", status="sent") == 2
    assert value(samples_, family, kind="payment_failed", status="failed") == 1
    assert value(samples_, family, kind="card_expiring", status="shadow") == 1
    # Every kind and status has a series, so an alert on failures never sees "no data".
    assert value(samples_, family, kind="final_notice", status="failed") == 0
    assert len(samples_[family]) == len(Kind) * len(Status)


# --- the shadow report --------------------------------------------------------------------
def test_the_shadow_report_lists_the_notices_that_would_have_been_sent(
    reader, stripe_sender, test_clock
):
    rollout.set_gate(stage="off", kill_switch=False, allowlist=[], actor="ops", reason="shadow")
    cus = customer_with_an_address(stripe_sender, "cus_shadowed", ["en"])
    account = account_of(cus)
    old = notice(account, "card_expiring:2026-01-31:14", kind=Kind.CARD_EXPIRING)
    CustomerNotice.objects.filter(pk=old.pk).update(
        status=Status.SHADOW, due_at=clock.now() - timedelta(days=40)
    )
    clock_service.advance(seconds=8 * 86400)

    body = reader.get("/api/v1/rollout/shadow-decisions/?days=30").json()

    would = [row for row in body["would_send"] if row["account_id"] == account.pk]
    assert old.key not in {row["key"] for row in would}  # outside the 30 days
    [failed] = [row for row in would if row["kind"] == "payment_failed"]
    assert failed == {
        "account_id": account.pk,
        "stripe_customer_id": "cus_shadowed",
        "case_id": case_of(cus).pk,
        "kind": "payment_failed",
        "key": failed["key"],
        "due_at": "2026-11-02T09:00:00Z",  # when the payment failed
    }
    assert CustomerNotice.objects.filter(account=account, status=Status.SENT).count() == 0
    assert body["decisions"]  # the decisions are still there beside it


# --- the admin ----------------------------------------------------------------------------
def staff(username: str, *groups: str) -> Client:
    user = User.objects.create_user(username, password="x", is_staff=True)
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    client = Client()
    client.force_login(user)
    return client


def preview(client: Client, account_id: int, **query):
    return client.get(f"/admin/dunning/customernotice/preview/{account_id}/", query)


def assert_every_kind_rendered(response, language: str) -> dict:
    assert response.status_code == 200
    shown = {item["kind"]: item for item in response.context["notices"]}
    assert set(shown) == set(Kind.values)
    page = response.content.decode()
    for item in shown.values():
        rendered = item["rendered"]
        assert rendered.language == language
        assert escape(rendered.subject) in page
        assert f'srcdoc="{escape(rendered.html)}"' in page  # escaped into the attribute
    return shown


def test_the_preview_renders_every_message_with_the_open_cases_facts(stripe_sender, test_clock):
    cus = customer_with_an_address(stripe_sender, "cus_preview", ["fr-FR", "en"])
    account = account_of(cus)

    shown = assert_every_kind_rendered(preview(staff("rita", "support_read"), account.pk), "fr")

    failed = shown["payment_failed"]
    assert failed["source"].startswith("planned by the engine now")
    assert '"amount": 2000' in failed["facts"]  # the case's invoice, not a sample
    assert f"its open case {case_of(cus).pk}" == shown["recovered"]["source"]


def test_the_preview_without_a_case_uses_the_last_invoice_and_switches_language(test_clock):
    account = Account.objects.create(
        stripe_customer_id="cus_quiet", email="quiet@example.com", preferred_locales=["en-GB"]
    )
    Invoice.objects.create(
        stripe_invoice_id="in_quiet_last",
        account=account,
        status=Invoice.Status.PAID,
        amount_due=12900,
        currency="eur",
        stripe_created=clock.now() - timedelta(days=30),
        version=clock.now() - timedelta(days=30),
        version_event_id="evt_quiet_last",
    )
    reader = staff("rita", "support_read")

    shown = assert_every_kind_rendered(preview(reader, account.pk), "en")
    assert '"amount": 12900' in shown["final_notice"]["facts"]
    assert "its last invoice, in_quiet_last" in shown["final_notice"]["source"]

    assert_every_kind_rendered(preview(reader, account.pk, language="fr"), "fr")
    bad = preview(reader, account.pk, language="<script>")
    assert_every_kind_rendered(bad, "en")  # a bad locale is refused; the customer's is used
    assert bad.context["chosen"] == "" and bad.context["form"].errors


def test_the_preview_is_for_support_roles_and_linked_from_the_case_and_the_notice(
    stripe_sender, test_clock
):
    cus = failing_customer(stripe_sender)
    account = account_of(cus)
    row = CustomerNotice.objects.filter(account=account).first()
    link = f"/admin/dunning/customernotice/preview/{account.pk}/"

    assert preview(staff("nobody"), account.pk).status_code == 403
    assert preview(staff("rita", "support_read"), 999_999).status_code == 404
    reader = staff("agent", "support_actions")
    case_page = reader.get(f"/admin/dunning/dunningcase/{case_of(cus).pk}/change/")
    notice_page = reader.get(f"/admin/dunning/customernotice/{row.pk}/change/")
    assert link in case_page.content.decode()
    assert link in notice_page.content.decode()


@pytest.mark.parametrize(
    "query",
    ["", "kind__exact=payment_failed", "status__exact=sent", "channel__exact=email", "q=@example"],
)
def test_the_notice_list_filters_and_searches(stripe_sender, test_clock, query):
    customer_with_an_address(stripe_sender, "cus_listed", [])
    reader = staff("rita", "support_read")

    response = reader.get(f"/admin/dunning/customernotice/?{query}")

    assert response.status_code == 200  # an unknown filter would redirect to ?e=1
    assert response.context["cl"].result_count >= 1


def test_the_notice_list_narrows_to_one_account(stripe_sender, test_clock):
    told = account_of(customer_with_an_address(stripe_sender, "cus_one", []))
    failing_customer(stripe_sender, "cus_two")
    reader = staff("rita", "support_read")

    response = reader.get("/admin/dunning/customernotice/", {"account__id__exact": told.pk})

    rows = list(response.context["cl"].result_list)
    assert rows and {row.account_id for row in rows} == {told.pk}
