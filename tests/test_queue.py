"""The one queue module under the webhook pump and the outbox: one backoff formula, claims
that never overlap, ids handed out in batches (one broker message each), a refused batch
due again at once, and a worker running a batch item by item."""

import base64
import json
from datetime import timedelta

import pytest
import redis
from django.conf import settings

from billing_events.models import Account
from billing_events.scenarios import StripeCustomer
from core import clock
from dunning import outbox, outbox_items, queue, tasks
from dunning import test_clock as clock_service
from dunning.intake import processing
from dunning.models import OutboxItem
from dunning.outbox_items import QUEUE, add_item
from tests.dunning_helpers import deliver_now
from tests.fake_stripe import API_KEY, Decline

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("attempts", "cap", "delay"),
    [
        (0, HOUR, timedelta(seconds=30)),
        (1, HOUR, timedelta(seconds=30)),
        (2, HOUR, timedelta(minutes=1)),
        (3, HOUR, timedelta(minutes=2)),
        (7, HOUR, timedelta(minutes=32)),
        (8, HOUR, HOUR),  # 64 min, capped
        (12, 6 * HOUR, 6 * HOUR),
        (10, 6 * HOUR, timedelta(seconds=15360)),
    ],
)
def test_one_backoff_formula(attempts, cap, delay):
    assert queue.backoff(attempts, cap=cap) == delay


def test_the_pump_and_the_outbox_use_it():
    assert outbox.retry_delay(8) == queue.backoff(8, cap=HOUR)
    assert processing.retry_delay(12) == queue.backoff(12, cap=6 * HOUR)


def due_items(n: int) -> list[int]:
    account = Account.objects.create(stripe_customer_id="cus_queue")
    now = clock.now()
    return [
        add_item(
            account_id=account.pk,
            decision_id=None,
            kind=OutboxItem.Kind.OUTCOME_EVENT,
            key=f"queue-test:{k}",
            payload={},
            due=now - timedelta(seconds=1),
            now=now,
        )
        for k in range(n)
    ]


def test_claims_never_overlap_and_are_leased():
    ids = due_items(7)

    first = outbox.claim_due(limit=4)
    second = outbox.claim_due(limit=10)

    assert sorted(first + second) == ids and not set(first) & set(second)
    assert outbox.claim_due() == []
    leased = OutboxItem.objects.filter(pk__in=ids).values_list("claimed_until", flat=True)
    assert all(until > clock.now() for until in leased)


def test_due_items_go_out_one_broker_message_per_batch():
    ids = due_items(25)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = broker.llen("celery")

    assert outbox.dispatch_due() == 25

    assert broker.llen("celery") - before == 3  # batches of outbox.BATCH = 10
    assert outbox.claim_due() == [] and ids


def test_a_batch_the_broker_refused_is_due_again_at_once():
    ids = due_items(3)
    claimed = outbox.claim_due()

    def broker_down(batch):
        raise ConnectionError("redis is down")

    handed = queue.dispatch(QUEUE, claimed, publish=broker_down, batch=10, now=clock.now)

    assert handed == 0
    assert sorted(outbox.claim_due()) == ids  # no lease to wait out


def test_a_worker_runs_a_batch_item_by_item(stripe_sender, test_clock, settings, fake_stripe):
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake_stripe.url
    retries = []
    for n in range(2):
        cus = StripeCustomer(id=f"cus_batch{n}", subscription=f"sub_batch{n}")
        deliver_now(
            stripe_sender,
            cus,
            lambda c, n=n: c.charge_event(
                "charge.failed", f"ch_batch{n}", decline_code="insufficient_funds"
            ),
            lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
        )
        fake_stripe.script(cus.invoice_id, [Decline("insufficient_funds")])
        retries.append(
            OutboxItem.objects.get(account__stripe_customer_id=cus.id, kind="payment_retry")
        )
    clock_service._set(max(item.next_attempt_at for item in retries))
    claimed = outbox.claim_due()

    statuses = outbox.run_items([item.pk for item in retries] + [0])

    assert {item.pk for item in retries} <= set(claimed)
    assert statuses == ["done", "done", "skipped"]
    assert len([r for r in fake_stripe.requests if r.path.endswith("/pay")]) == 2


def test_kicks_asked_for_during_a_batch_are_one_message():
    """Each recompute of a batch that adds an item asks for a dispatcher kick (after its
    commit); the worker sends one when the batch ends, none if nobody asked."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = broker.llen("celery")
    with outbox_items.one_kick():
        pass
    assert broker.llen("celery") == before
    with outbox_items.one_kick():
        outbox_items.kick_dispatcher()
        outbox_items.kick_dispatcher()
        assert broker.llen("celery") == before
    assert broker.llen("celery") - before == 1
    outbox_items.kick_dispatcher()  # outside a batch: at once
    assert broker.llen("celery") - before == 2


def test_an_item_whose_lease_ran_out_in_the_batch_is_left_to_the_next_claim(test_clock):
    ids = due_items(2)
    assert sorted(outbox.claim_due()) == ids
    # The items before these in the batch took longer than the lease: a dispatcher may
    # already have handed them out again, so this worker must not run them too.
    clock_service._set(clock.now() + outbox_items.LEASE + timedelta(seconds=1))

    assert outbox.run_items(ids) == ["skipped", "skipped"]

    items = OutboxItem.objects.filter(pk__in=ids)
    assert {(i.status, i.attempts) for i in items} == {(OutboxItem.Status.PENDING, 0)}
    assert sorted(outbox.claim_due()) == ids  # due again, nothing lost


def _tasks_on(broker, queue_name: str, since: int) -> list[tuple[str, list]]:
    messages = broker.lrange(queue_name, 0, -1)[: broker.llen(queue_name) - since]
    decoded = [json.loads(message) for message in messages]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in decoded]


@pytest.mark.django_db(transaction=True)  # the batch's own commits run its on-commit hooks
def test_a_batch_hands_out_what_its_recomputes_added_without_waking_the_dispatcher(
    stripe_sender, test_clock, settings, fake_stripe
):
    """A retry that pays adds its "recovered" message, due now: the worker that ran the
    batch claims and publishes it itself (what the dispatcher's task would have done),
    so no task message only to wake the dispatcher."""
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = fake_stripe.url
    cus = StripeCustomer(id="cus_batch_hands_out", subscription="sub_batch_hands_out")
    deliver_now(
        stripe_sender,
        cus,
        lambda c: c.charge_event(
            "charge.failed", "ch_hands_out", decline_code="insufficient_funds"
        ),
        lambda c: c.invoice_event("invoice.payment_failed", attempt_count=1),
    )
    retry = OutboxItem.objects.get(kind="payment_retry")
    OutboxItem.objects.exclude(pk=retry.pk).update(status=OutboxItem.Status.DONE)
    clock_service._set(retry.next_attempt_at)
    assert outbox.claim_due() == [retry.pk]
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = broker.llen("celery")

    assert tasks.run_outbox_items([retry.pk]) == ["done"]  # as a worker runs the task

    recovered = OutboxItem.objects.get(kind="customer_notice", payload__kind="recovered")
    published = _tasks_on(broker, "celery", before)
    assert published == [(outbox.RUN_ITEMS_TASK, [[recovered.pk]])]
    recovered.refresh_from_db()
    assert recovered.claimed_until is not None  # claimed by the worker, leased
