import threading
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from billing_events.scenarios import StripeCustomer
from core import clock
from tests.dunning_helpers import case_of, deliver_now

pytestmark = pytest.mark.django_db
URL = "/api/v1/test-clock/advance/"


def test_without_the_flag_the_endpoint_does_not_exist(api_client, settings):
    settings.DUNNING_TEST_CLOCK = False
    assert api_client.post(URL, {"seconds": 60}, format="json").status_code == 404


def test_advancing_runs_what_became_due_before_answering(api_client, stripe_sender, test_clock):
    cus = StripeCustomer()
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds"),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )

    response = api_client.post(URL, {"seconds": 8 * 86400}, format="json")

    assert response.status_code == 200
    assert response.json()["ran"]["case_reviews"] == 1
    assert response.json()["now"].startswith("2026-11-10T09:00:00")
    assert case_of(cus).level == "premium_restricted"


def test_advance_to_a_time(api_client, test_clock):
    response = api_client.post(URL, {"to": "2026-12-01T00:00:00Z"}, format="json")

    assert response.status_code == 200
    assert clock.now().isoformat() == "2026-12-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "non_field_errors"),
        ({"seconds": 60, "to": "2026-12-01T00:00:00Z"}, "non_field_errors"),
        ({"seconds": -5}, "seconds"),
        ({"seconds": "soon"}, "seconds"),
        ({"to": "next tuesday"}, "to"),
    ],
)
def test_bad_body_gets_field_errors_and_moves_nothing(api_client, test_clock, body, field):
    response = api_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert clock.now() == test_clock


def test_the_clock_never_goes_back(api_client, test_clock):
    response = api_client.post(URL, {"to": "2020-01-01T00:00:00Z"}, format="json")

    assert response.status_code == 400
    assert "only moves forward" in response.json()["detail"]


def test_anonymous_callers_are_refused(client, test_clock):
    assert client.post(URL, {"seconds": 60}, content_type="application/json").status_code in (
        401,
        403,
    )


def test_management_command_advances_the_clock(test_clock, capsys):
    call_command("advance_clock", "--seconds", "3600")

    assert clock.now() == test_clock + timedelta(hours=1)
    assert "ran webhook_events: 0, case_reviews: 0, outbox_items: 0" in capsys.readouterr().out


def test_management_command_rejects_bad_times(test_clock):
    with pytest.raises(CommandError, match="not an ISO 8601 time"):
        call_command("advance_clock", "--to", "yesterday")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_an_advance_runs_every_retry_on_its_day_with_beat_and_workers_running(
    stripe_sender, test_clock, celery_worker_thread, simulated_gateway
):
    """Beat keeps dispatching due items to a real worker while the advance walks 7.5 days:
    three soft declines are still retried on days 1, 3 and 5, not whenever a worker got
    to an item claimed at another moment of the walk."""
    from billing_events.models import PaymentAttempt
    from dunning import test_clock as clock_service
    from dunning.intake.tasks import sweep_webhook_events
    from dunning.tasks import dispatch_outbox, recompute_due_cases

    customers = [StripeCustomer() for _ in range(3)]
    for cus in customers:
        deliver_now(
            stripe_sender,
            cus,
            lambda c: c.charge_event("charge.failed", "ch_1", decline_code="insufficient_funds"),
            lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
        )
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            for task in (dispatch_outbox, recompute_due_cases, sweep_webhook_events):
                task.apply_async()
            time.sleep(0.2)

    ticking = threading.Thread(target=beat, daemon=True)
    ticking.start()
    try:
        time.sleep(0.5)
        clock_service.advance(seconds=int(7.5 * 86400))
    finally:
        stop.set()
        ticking.join(timeout=10)

    for cus in customers:
        retried = PaymentAttempt.objects.filter(
            account__stripe_customer_id=cus.id, attempt_key__startswith="ch_sim_"
        ).order_by("attempted_at")
        days = [round((a.attempted_at - test_clock).total_seconds() / 86400, 2) for a in retried]
        assert days == [1.0, 3.0, 5.0], (cus.id, days)


def test_beat_stands_aside_only_while_another_session_advances(test_clock, transactional_db):
    from dunning import test_clock as clock_service

    holder = threading.Event()
    release = threading.Event()

    def advancing() -> None:
        with clock_service._holding_the_clock():
            holder.set()
            release.wait(timeout=10)
        connection.close()

    assert clock_service.advance_in_progress() is False
    other = threading.Thread(target=advancing)
    other.start()
    try:
        assert holder.wait(timeout=10)
        assert clock_service.advance_in_progress() is True
    finally:
        release.set()
        other.join(timeout=10)
    assert clock_service.advance_in_progress() is False
    # Asking never leaves this session holding the lock it tried.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        assert cursor.fetchone()[0] == 0
