"""The load of bench/e2e.py: many accounts living the demo's dunning stories, in Stripe's
own event shapes (billing_events.samples), shuffled, one delivery in five repeated (Stripe
retries and never keeps order), signed, one request a line for bench/wrk/e2e_events.lua.

Every story starts 30 days before the run (a late delivery, as in `make demo`), so the
retries the engine plans are due at once and run during the measurement, against the fake
Stripe. Import after django.setup(): the demo's module reads the models.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

from billing_events.scenarios import StripeCustomer
from billing_events.signature import sign_header
from dunning.demo import DAY, STORIES


def soft_decline_left_to_retries(cus: StripeCustomer) -> str:
    """No payment after the failure: the service's own retry (the fake Stripe pays)."""
    cus.charge_event("charge.failed", f"ch_{cus.id}_1", decline_code="insufficient_funds")
    cus.invoice_event("invoice.payment_failed", attempt_count=1)
    cus.subscription_event("customer.subscription.updated", status="past_due")
    return "insufficient funds, left to the service's retries"


MIX = (*STORIES, soft_decline_left_to_retries)


def build(*, tag: str, accounts: int, seed: int, start: int) -> tuple[list[dict], Counter]:
    """The deliveries of `accounts` customers (ids carry `tag`, so rounds never collide):
    each one's customer, subscription and invoice, then its story; shuffled, with
    re-deliveries. Returns the deliveries and the count of event types (distinct events)."""
    rng = random.Random(seed)
    events: list[dict] = []
    for n in range(accounts):
        story = MIX[n % len(MIX)]
        cus = StripeCustomer(id=f"cus_{tag}n{n:05d}", subscription=f"sub_{tag}n{n:05d}", t=start)
        cus.customer_created(preferred_locales=["fr-FR", "en"] if n % 5 == 4 else ["en-US"])
        cus.subscription_event("customer.subscription.created")
        cus.invoice_event("invoice.finalized")
        cus.tick(60)
        story(cus)
        events.extend(cus.events)
    for number, event in enumerate(events):
        event["id"] = f"evt_{tag}_{number:07d}"
    deliveries = events + rng.sample(events, k=len(events) // 5)
    rng.shuffle(deliveries)
    return deliveries, Counter(event["type"] for event in events)


def write_records(path: Path, deliveries: list[dict], *, secret: str) -> int:
    """One signed request a line; the signature's time is now (the tolerance is 5 minutes,
    so a file is written just before it is posted). Returns the mean body size."""
    now = int(time.time())
    size = 0
    with path.open("wb") as out:
        for event in deliveries:
            body = json.dumps(event, separators=(",", ":")).encode()
            assert b"\n" not in body and b"\t" not in body
            header = sign_header(payload=body, secret=secret, timestamp=now)
            out.write(header.encode() + b"\t" + body + b"\n")
            size += len(body)
    return size // max(1, len(deliveries))


def story_start(now: float) -> int:
    return int(now) - 30 * DAY
