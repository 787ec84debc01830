import time

import pytest
import stripe

from billing_events import samples
from billing_events.models import WebhookEvent
from tests.conftest import PREVIOUS_SECRET, SECRET

pytestmark = pytest.mark.django_db


def invoice_failed_event() -> dict:
    created = int(time.time())
    obj = samples.invoice(id="in_sig", customer="cus_sig", created=created, attempt_count=1)
    return samples.event("invoice.payment_failed", obj, created=created)


def test_header_made_by_the_stripe_sdk_is_accepted(stripe_sender):
    payload = samples.signed(invoice_failed_event(), secret=SECRET, timestamp=0)[0]
    header = stripe.WebhookSignature.generate_signature_header(payload.decode(), SECRET)

    response = stripe_sender.post_raw(payload, header)

    assert response.status_code == 200
    assert WebhookEvent.objects.count() == 1


def test_previous_secret_is_accepted_during_rotation(stripe_sender):
    response = stripe_sender.send(invoice_failed_event(), secret=PREVIOUS_SECRET)
    assert response.status_code == 200


def test_one_matching_signature_among_several_is_enough(stripe_sender):
    payload, header = samples.signed(
        invoice_failed_event(), secret=SECRET, timestamp=int(time.time())
    )
    timestamp, good = header.split(",")
    rotated = f"{timestamp},v1={'0' * 64},{good},v0=legacy"

    assert stripe_sender.post_raw(payload, rotated).status_code == 200


@pytest.mark.parametrize(
    "header_for",
    [
        pytest.param(lambda payload, ts: None, id="missing"),
        pytest.param(lambda payload, ts: "", id="empty"),
        pytest.param(lambda payload, ts: "garbage", id="malformed"),
        pytest.param(lambda payload, ts: f"t=abc,v1={'0' * 64}", id="bad-timestamp"),
        pytest.param(lambda payload, ts: f"t={ts}", id="no-v1"),
        pytest.param(
            lambda payload, ts: samples.sign_header(
                payload=payload, secret="whsec_someone_else", timestamp=ts
            ),
            id="wrong-secret",
        ),
        pytest.param(
            lambda payload, ts: samples.sign_header(
                payload=payload, secret=SECRET, timestamp=ts - 301
            ),
            id="stale",
        ),
        pytest.param(
            # Well past the tolerance: the clock moves on between signing and checking, and a
            # second boundary crossed there would bring ts + 301 back inside it.
            lambda payload, ts: samples.sign_header(
                payload=payload, secret=SECRET, timestamp=ts + 330
            ),
            id="from-the-future",
        ),
        pytest.param(
            lambda payload, ts: samples.sign_header(
                payload=payload + b" ", secret=SECRET, timestamp=ts
            ),
            id="body-tampered",
        ),
    ],
)
def test_bad_signature_gets_400_and_stores_nothing(stripe_sender, header_for):
    payload = samples.signed(invoice_failed_event(), secret=SECRET, timestamp=0)[0]

    response = stripe_sender.post_raw(payload, header_for(payload, int(time.time())))

    assert response.status_code == 400
    assert "signature" in response.json()["error"]
    assert WebhookEvent.objects.count() == 0


def test_our_verifier_agrees_with_the_stripe_sdk():
    """Both directions: the SDK accepts what we sign, so the demo and simulator are honest."""
    payload, header = samples.signed(
        invoice_failed_event(), secret=SECRET, timestamp=int(time.time())
    )
    stripe.WebhookSignature.verify_header(payload.decode(), header, SECRET, tolerance=300)
