import pytest
from django.test import Client

from billing_events import samples
from config.celery import app as celery_app
from tests.fake_stripe import fake_stripe_fixture  # noqa: F401 - the `fake_stripe` fixture
from tests.http_peer import http_peer  # noqa: F401 - a loopback HTTP neighbour
from tests.smtp_peer import smtp  # noqa: F401 - a loopback SMTP server

SECRET = "whsec_test_current"
PREVIOUS_SECRET = "whsec_test_previous"


class StripeSender:
    """Posts events to the webhook endpoint signed as Stripe would."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def post_raw(self, payload: bytes, header: str | None):
        headers = {"HTTP_STRIPE_SIGNATURE": header} if header is not None else {}
        return self.client.post(
            "/webhooks/stripe/", data=payload, content_type="application/json", **headers
        )

    def send(self, event: dict, *, secret: str = SECRET, timestamp: int | None = None):
        from core import clock

        now = timestamp or int(clock.now().timestamp())
        payload, header = samples.signed(event, secret=secret, timestamp=now)
        return self.post_raw(payload, header)


@pytest.fixture
def stripe_sender(client: Client) -> StripeSender:
    return StripeSender(client)


@pytest.fixture
def celery_worker_thread(transactional_db):
    """A real Celery worker on the Redis broker, in a thread of this process."""
    from celery.contrib.testing.worker import start_worker

    celery_app.control.purge()
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10
    ) as worker:
        yield worker


@pytest.fixture
def test_clock(settings):
    """The project clock in test-clock mode, starting at a fixed UTC time."""
    from datetime import UTC, datetime

    from dunning.models import TestClock

    settings.DUNNING_TEST_CLOCK = True
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    TestClock.objects.create(pk=TestClock.SINGLETON, now=start)
    return start


@pytest.fixture
def api_client(db):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    user = User.objects.create_user("support", password="x", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture(autouse=True)
def simulated_gateway():
    """The payment gateway of the embedded default (no STRIPE_API_KEY in tests). Customers
    in tests stay unable to pay (soft decline) unless a test scripts otherwise."""
    from billing_events.gateway import SIMULATED, declined

    saved = SIMULATED.default, SIMULATED.decide
    SIMULATED.reset()
    SIMULATED.default = declined("insufficient_funds")
    yield SIMULATED
    SIMULATED.default, SIMULATED.decide = saved
    SIMULATED.reset()


@pytest.fixture
def support_reader(api_client):
    """The api_client's user with the support_read role."""
    from django.contrib.auth.models import Group, User

    User.objects.get(username="support").groups.add(
        Group.objects.get_or_create(name="support_read")[0]
    )
    return api_client
