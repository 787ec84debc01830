"""One run of the fault suite: the seeded stream of signed Stripe events, posting them,
reading the final state, and `one_run` (one fault injected while the stream is delivered)."""

import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from billing_events import samples
from billing_events.scenarios import StripeCustomer
from chaos.processes import (
    PG_PORT,
    REDIS_PORT,
    ROOT,
    SECRET,
    SETTLE_TIMEOUT,
    STOPPING,
    WEB_PORT,
    Processes,
    Services,
    pg_bin,
    say,
)
from tests.http_peer import Peer


def stream(customers: int, seed: int) -> list[dict]:
    """Signed-later events of dunning stories, shuffled, one in five sent twice."""
    rng = random.Random(seed)
    now = int(time.time())
    events = []
    for i in range(customers):
        cus = StripeCustomer(id=f"cus_chaos{seed}x{i}", subscription=f"sub_chaos{seed}x{i}")
        cus.t = now - rng.choice([1, 3, 9, 20]) * 86400 - 6 * 3600
        story = i % 5
        # The written-off story (4) carries a hard decline: with a retryable one the service's
        # own retry (due at once, the failure being days old, and paid by the simulated
        # gateway) races the scripted invoice.marked_uncollectible, and either may win in any
        # run, clean included, so the final state would not be a property of the stream.
        code = [
            "insufficient_funds",
            "expired_card",
            "fraudulent",
            "insufficient_funds",
            "card_not_supported",
        ][story]
        events.append(cus.charge_event("charge.failed", f"ch_{i}a", decline_code=code))
        cus.tick(60)
        events.append(cus.invoice_event("invoice.payment_failed", attempt_count=1))
        if story == 3:
            cus.tick(3600)
            events.append(cus.invoice_event("invoice.paid", status="paid", attempt_count=2))
        if story == 4:
            cus.tick(86400)
            events.append(
                cus.invoice_event(
                    "invoice.marked_uncollectible", status="uncollectible", attempt_count=2
                )
            )
    rng.shuffle(events)
    return events + [e for e in events if rng.random() < 0.2]


def post(event: dict) -> int:
    payload, header = samples.signed(event, secret=SECRET, timestamp=int(time.time()))
    request = urllib.request.Request(
        f"http://127.0.0.1:{WEB_PORT}/webhooks/stripe/",
        data=payload,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
    )
    return_code = 0
    for _ in range(30):  # the sender retries like Stripe does, bounded
        if STOPPING.is_set():
            break
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return error.code
            return_code = error.code
        except OSError:
            return_code = 0
        time.sleep(1)
    return return_code


READ_STATE = """
import json, django
django.setup()
from django.db.models import Count
from django.utils import timezone
from datetime import timedelta
from billing_events.models import Account, WebhookEvent
from dunning.models import AccountStanding, BadDebtPayment, DunningCase, OutboxItem
from entitlements.models import Restriction
now = timezone.now()
state = {}
for account in Account.objects.all():
    case = DunningCase.objects.filter(account=account).order_by("-pk").first()
    standing = AccountStanding.objects.filter(account=account).first()
    state[account.stripe_customer_id] = {
        "case": [case.state, case.resolution, case.level] if case else None,
        "restrictions": sorted(
            Restriction.objects.filter(account=account).values_list("code", flat=True)
        ),
        "standing": standing.requested if standing else None,
    }
events = WebhookEvent.objects
print(json.dumps({
    "state": state,
    "stored": sorted(events.values_list("stripe_event_id", flat=True).distinct()),
    "processed": events.filter(status__in=["processed", "ignored"]).count(),
    "duplicated": events.values("stripe_event_id").annotate(n=Count("pk")).filter(n__gt=1).count(),
    "events_pending": events.filter(status__in=["received", "failed", "dead"]).count(),
    "outbox_due": OutboxItem.objects.filter(status="pending", next_attempt_at__lte=now).count(),
    "outbox_dead": OutboxItem.objects.filter(status="dead").count(),
    "payments_processing": BadDebtPayment.objects.filter(status="processing").count(),
}))
"""


def read(env: dict) -> dict | None:
    done = subprocess.run(
        [sys.executable, "-c", READ_STATE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def settle(env: dict, started: float) -> tuple[dict, float]:
    """Wait (bounded) until nothing is due for 10 s in a row."""
    quiet_since, last = None, None
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        last = read(env) or last
        busy = last is None or last["events_pending"] or last["outbox_due"]
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 10:
            return last, quiet_since - started
        time.sleep(2)
    return last or {}, time.monotonic() - started


def one_run(
    name: str,
    events: list[dict],
    services: Services,
    base_env: dict,
    tmp: Path,
    peer: Peer,
    running: list[Processes],
) -> dict:
    db = f"chaos_{name}"
    env = {**base_env, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{PG_PORT}/{db}"}
    say(f"{name}: creating and migrating {db}")
    subprocess.run(
        [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", db],
        check=True,
        timeout=60,
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    subprocess.run(
        ["redis-cli", "-p", str(REDIS_PORT), "flushall"],
        check=False,
        stdout=subprocess.DEVNULL,
        timeout=30,
    )
    procs = Processes(env, tmp / name)
    (tmp / name).mkdir()
    running.append(procs)
    answers: list[int] = []
    half = len(events) // 2
    back_to_200: threading.Timer | None = None

    def fault() -> None:
        nonlocal back_to_200
        if name != "clean":
            say(f"{name}: injecting the fault")
        if name == "kill9":
            procs.kill9("worker")
            time.sleep(3)
            procs.start("worker")
        elif name == "redis":
            services.kill_redis()
            time.sleep(10)
            services.start_redis()
        elif name == "postgres":
            services.restart_pg()
        elif name == "am503":
            peer.status = 503
            back_to_200 = threading.Timer(120, lambda: setattr(peer, "status", 200))
            back_to_200.daemon = True
            back_to_200.start()

    try:
        procs.start()
        time.sleep(6)
        started = time.monotonic()
        say(f"{name}: sending {len(events)} deliveries")
        with ThreadPoolExecutor(4) as pool:
            answers += list(pool.map(post, events[:half]))
            fault()
            if name == "burst":
                answers += list(pool.map(post, [events[0]] * 40))
            answers += list(pool.map(post, events[half:]))
        say(f"{name}: sent ({sum(1 for c in answers if c >= 500 or c == 0)} 5xx); settling")
        final, settle_seconds = settle(env, started)
        if name == "am503":  # the standing calls wait out the outage, then settle
            time.sleep(max(0.0, 125 - (time.monotonic() - started)))
            final, settle_seconds = settle(env, started)
    finally:
        if back_to_200 is not None:
            back_to_200.cancel()
        procs.stop()
        running.remove(procs)
        peer.status = 200
    sent = {e["id"] for e in events}
    stored = set(final.get("stored", []))
    return {
        "run": name,
        "sent": len(sent),
        "stored": len(stored & sent),
        "processed": final.get("processed", 0),
        "lost": len(sent - stored),
        "duplicated": final.get("duplicated", 0),
        "stuck": final.get("events_pending", 0)
        + final.get("outbox_due", 0)
        + final.get("payments_processing", 0),
        "state": final.get("state", {}),
        "5xx": sum(1 for code in answers if code >= 500 or code == 0),
        "settle_s": round(settle_seconds, 1),
    }
