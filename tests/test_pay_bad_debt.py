"""POST /api/v1/accounts/{id}/pay-bad-debt/: the guarded way out of bad debt."""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from billing_events.gateway import FailureLookup, declined, succeeded
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import payment_sweeper
from dunning import test_clock as clock_service
from dunning.models import BadDebtEpisode, BadDebtPayment, OutboxItem, SupportAction
from entitlements.models import Restriction
from tests.dunning_helpers import account_of, case_of, deliver_now

pytestmark = pytest.mark.django_db
set_clock = clock_service._set


@pytest.fixture
def payments_app(db) -> APIClient:
    user = User.objects.create_user("customer-app")
    user.groups.add(Group.objects.get_or_create(name="payments_app")[0])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def in_bad_debt(sender, cus: StripeCustomer, amount: int = 4900) -> None:
    deliver_now(
        sender,
        cus,
        lambda c: c.charge_event(
            "charge.failed", "ch_1", decline_code="do_not_honor", amount=amount
        ),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1, amount_due=amount),
    )
    clock_service.advance(seconds=2 * 86400)
    deliver_now(
        sender,
        cus,
        lambda c: c.invoice_event(
            "invoice.marked_uncollectible",
            status="uncollectible",
            attempt_count=2,
            amount_due=amount,
        ),
    )
    # Bad debt from the first moment; the ladder climbs to premium features restricted.
    clock_service.advance(seconds=4 * 86400)


def pay(client, cus, key="key-1", **body):
    body = {"invoices": [cus.invoice_id], "amount": 4900, "currency": "usd", **body}
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        f"/api/v1/accounts/{account_of(cus).pk}/pay-bad-debt/", body, format="json", **headers
    )


def test_paying_bad_debt_lifts_everything_and_closes_the_episode_as_paid(
    payments_app, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    in_bad_debt(stripe_sender, cus)
    simulated_gateway.script(cus.invoice_id, [succeeded()])
    assert Restriction.objects.exists()

    response = pay(payments_app, cus)

    assert response.status_code == 200, response.json()
    assert response.json() == {
        "status": "paid",
        "invoices": [cus.invoice_id],
        "amount": 4900,
        "currency": "usd",
    }
    episode = BadDebtEpisode.objects.get()
    assert (episode.exit_reason, episode.exited_at is not None) == ("paid", True)
    assert case_of(cus).resolution == "paid"
    assert not Restriction.objects.exists()
    assert case_of(cus).transitions.filter(trigger="BAD_DEBT_PAID").exists()
    assert SupportAction.objects.get(action="pay_bad_debt").actor == "customer-app"


def test_a_replay_returns_the_first_answer_and_charges_once(
    payments_app, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    in_bad_debt(stripe_sender, cus)
    simulated_gateway.script(cus.invoice_id, [succeeded()])

    first = pay(payments_app, cus)
    second = pay(payments_app, cus)

    assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert (
        len(
            [
                c
                for c in simulated_gateway.calls
                if c[0] == "pay_invoice" and c[2].startswith("bad-debt:")
            ]
        )
        == 1
    )


def test_the_same_key_for_another_request_is_refused(
    payments_app, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    in_bad_debt(stripe_sender, cus)
    simulated_gateway.script(cus.invoice_id, [declined("insufficient_funds")])
    assert pay(payments_app, cus).status_code == 402

    response = pay(payments_app, cus, amount=4800)

    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    "body, status, error",
    [
        ({"amount": 100}, 422, "amount_mismatch"),
        ({"currency": "eur"}, 422, "amount_mismatch"),
        ({"invoices": ["in_someone_else"]}, 422, "invoices_not_in_bad_debt"),
    ],
)
def test_guards_refuse_and_charge_nothing(
    payments_app, stripe_sender, test_clock, simulated_gateway, body, status, error
):
    cus = StripeCustomer()
    in_bad_debt(stripe_sender, cus)

    response = pay(payments_app, cus, **body)

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert [
        c for c in simulated_gateway.calls if c[0] == "pay_invoice" and c[2].startswith("bad-debt:")
    ] == []
    assert BadDebtPayment.objects.count() == 0


def test_an_account_not_in_bad_debt_is_refused(payments_app, stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1, amount_due=4900),
    )

    response = pay(payments_app, cus)

    assert (response.status_code, response.json()["error"]) == (409, "not_in_bad_debt")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"amount": "lots"}, "amount"),
        ({"invoices": []}, "invoices"),
        ({"currency": "dollars"}, "currency"),
    ],
)
def test_bad_body_gets_field_errors(payments_app, stripe_sender, test_clock, body, field):
    cus = StripeCustomer()
    in_bad_debt(stripe_sender, cus)

    response = pay(payments_app, cus, **body)

    assert response.status_code == 400 and field in response.json()


def test_idempotency_key_is_required(payments_app, stripe_sender, test_clock):
    cus = StripeCustomer()
    in_bad_debt(stripe_sender, cus)

    response = pay(payments_app, cus, key=None)

    assert response.status_code == 400 and "Idempotency-Key" in response.json()


def test_roles(api_client, client, stripe_sender, test_clock):
    cus = StripeCustomer()
    in_bad_debt(stripe_sender, cus)
    url = f"/api/v1/accounts/{account_of(cus).pk}/pay-bad-debt/"

    assert client.post(url, {}, content_type="application/json").status_code == 401
    assert (
        api_client.post(url, {}, format="json").status_code == 403
    )  # support is not the payments app
    assert (
        api_client.post("/api/v1/accounts/999999/pay-bad-debt/", {}, format="json").status_code
        == 403
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_charge_once(stripe_sender, test_clock, simulated_gateway):
    cus = StripeCustomer()
    in_bad_debt(stripe_sender, cus)
    simulated_gateway.script(cus.invoice_id, [succeeded()])
    user = User.objects.create_user("customer-app")
    user.groups.add(Group.objects.get_or_create(name="payments_app")[0])
    token = Token.objects.create(user=user).key
    barrier = threading.Barrier(3)
    answers = []

    def call(key: str) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        barrier.wait(timeout=10)
        answers.append(pay(client, cus, key=key).status_code)
        connection.close()

    threads = [threading.Thread(target=call, args=(key,)) for key in ("a", "b", "a")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    charges = [
        c for c in simulated_gateway.calls if c[0] == "pay_invoice" and c[2].startswith("bad-debt:")
    ]
    assert len(charges) == 1
    assert sorted(answers).count(200) >= 1 and all(code in (200, 409) for code in answers)
    assert OutboxItem.objects.filter(status="dead").count() == 0


# --- a crashed payment: answered, resolved by the sweeper, visible and releasable ------------


def crash_on_pay(gateway) -> None:
    def boom(invoice_id: str, attempt: int):
        raise RuntimeError("gateway blew up")

    gateway.decide = boom


@pytest.fixture
def support_actor(api_client):
    User.objects.get(username="support").groups.add(
        Group.objects.get_or_create(name="support_actions")[0]
    )
    return api_client


def crashed_request(payments_app, sender, cus, gateway):
    in_bad_debt(sender, cus)
    crash_on_pay(gateway)
    response = pay(payments_app, cus)
    gateway.decide = None
    return response


def test_a_crashing_gateway_is_answered_and_the_request_stays_processing(
    payments_app, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()

    response = crashed_request(payments_app, stripe_sender, cus, simulated_gateway)

    assert response.status_code == 502
    assert response.json()["status"] == "processing"
    assert BadDebtPayment.objects.get().status == "processing"
    assert pay(payments_app, cus).json()["error"] == "in_progress"
    assert pay(payments_app, cus, key="key-2").json()["error"] == "payment_in_progress"


def test_the_sweeper_finishes_a_crashed_payment_that_stripe_took(
    payments_app, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    crashed_request(payments_app, stripe_sender, cus, simulated_gateway)
    simulated_gateway.script_failure(
        cus.invoice_id, FailureLookup(found=False, outcome="succeeded", charge_id="ch_paid")
    )
    assert payment_sweeper.resolve_crashed_payments() == []  # not stale yet: it may be live

    set_clock(clock.now() + timedelta(minutes=2))
    [resolved] = payment_sweeper.resolve_crashed_payments()

    assert BadDebtPayment.objects.get(pk=resolved).status == "paid"
    assert pay(payments_app, cus).status_code == 200  # the replay reads the outcome
    assert case_of(cus).resolution == "paid"
    assert BadDebtEpisode.objects.get().exit_reason == "paid"
    assert not Restriction.objects.exists()
    assert SupportAction.objects.get(action="pay_bad_debt").actor == "sweeper"


def test_the_sweeper_releases_a_crashed_payment_stripe_never_took(
    payments_app, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    crashed_request(payments_app, stripe_sender, cus, simulated_gateway)
    set_clock(clock.now() + timedelta(minutes=2))

    payment_sweeper.resolve_crashed_payments()

    assert BadDebtPayment.objects.get().status == "error"
    assert [c[0] for c in simulated_gateway.calls if c[1] == cus.invoice_id][-1] == (
        "latest_failure"
    )  # it looked, it did not charge
    simulated_gateway.script(cus.invoice_id, [succeeded()])
    assert pay(payments_app, cus, key="key-2").status_code == 200  # the account is free again


def test_the_sweeper_waits_while_stripe_cannot_be_asked(
    payments_app, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    crashed_request(payments_app, stripe_sender, cus, simulated_gateway)
    simulated_gateway.script_failure(
        cus.invoice_id, FailureLookup(found=False, retryable_error=True, message="timeout")
    )
    set_clock(clock.now() + timedelta(minutes=2))

    assert payment_sweeper.resolve_crashed_payments() == []
    assert BadDebtPayment.objects.get().status == "processing"


def test_support_sees_a_crashed_request_and_releases_it_audited(
    payments_app, support_actor, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    crashed_request(payments_app, stripe_sender, cus, simulated_gateway)
    set_clock(clock.now() + timedelta(minutes=5))
    url = f"/api/v1/accounts/{account_of(cus).pk}/bad-debt-payments/"

    [seen] = support_actor.get(url).json()["requests"]
    assert (seen["status"], seen["stale"], seen["processing_seconds"]) == (
        "processing",
        True,
        300.0,
    )
    assert seen["request"] == {"invoices": [cus.invoice_id], "amount": 4900, "currency": "usd"}

    released = support_actor.post(
        f"{url}{seen['id']}/release/", {"reason": "customer called"}, format="json"
    )

    assert released.status_code == 200 and released.json()["status"] == "released"
    audit = SupportAction.objects.get(action="release_bad_debt_payment")
    assert (audit.actor, audit.payload["reason"]) == ("support", "customer called")
    assert pay(payments_app, cus).json()["error"] == "payment_released"
    again = support_actor.post(f"{url}{seen['id']}/release/", {"reason": "x"}, format="json")
    assert again.status_code == 409
    simulated_gateway.script(cus.invoice_id, [succeeded()])
    assert pay(payments_app, cus, key="key-2").status_code == 200


def test_release_needs_support_actions_and_a_reason(
    payments_app, support_reader, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    crashed_request(payments_app, stripe_sender, cus, simulated_gateway)
    url = f"/api/v1/accounts/{account_of(cus).pk}/bad-debt-payments/"
    payment = BadDebtPayment.objects.get()

    assert support_reader.get(url).status_code == 200
    assert support_reader.post(f"{url}{payment.pk}/release/", {"reason": "x"}).status_code == 403
    User.objects.get(username="support").groups.add(
        Group.objects.get_or_create(name="support_actions")[0]
    )
    del User.objects.get(username="support").__dict__  # no cached roles across requests
    assert support_reader.post(f"{url}{payment.pk}/release/", {}, format="json").status_code == 400


def test_the_admin_lists_crashed_requests_and_releases_them(
    payments_app, admin_client, stripe_sender, test_clock, simulated_gateway
):
    cus = StripeCustomer()
    crashed_request(payments_app, stripe_sender, cus, simulated_gateway)
    set_clock(clock.now() + timedelta(minutes=5))
    url = "/admin/dunning/baddebtpayment/"
    payment = BadDebtPayment.objects.get()

    listed = admin_client.get(url, {"crashed": "yes"})
    assert payment.idempotency_key in listed.content.decode()

    admin_client.post(url, {"action": "release", "_selected_action": [payment.pk]})

    assert BadDebtPayment.objects.get().status == "released"
    assert SupportAction.objects.get(action="release_bad_debt_payment").actor == "admin"
