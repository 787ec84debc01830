"""What the configured database knows of a window: the stored Stripe events, which of them
the service's own actions caused, and each invoice's charges at Stripe.

Read once, before any scratch database is made, and held in memory: both replays use the
same `History`.

An event the service itself caused (the charge and invoice events after one of its
retries, the subscription deleted after its cancellation, the invoice voided by a revert)
is not replayed as it was: each replay makes its own retries and cancellations, and Stripe's
answers to those come back from the replay's gateway instead. Every other event (first
attempts, customers paying or adding a card, finance voiding or writing off) happened
whatever the policy did, and is replayed at its original time, in its original order.
"""

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from billing_events.gateway import FailureLookup
from billing_events.models import PaymentAttempt, WebhookEvent
from dunning.models import OutboxItem
from dunning.policy import Policy

# How long after one of the service's actions Stripe's events about it may come.
ECHO_WINDOW = timedelta(hours=6)
ECHO_EARLY = timedelta(minutes=2)  # Stripe's `created` may precede the outbox's completion
PAID_TYPES = ("invoice.paid", "invoice.payment_succeeded")


@dataclass(frozen=True)
class StoredEvent:
    stripe_event_id: str
    type: str
    received_at: datetime
    created: datetime
    body: str  # exactly what Stripe signed


@dataclass(frozen=True)
class Charge:
    """One charge on an invoice at Stripe, as the stored events tell it."""

    at: datetime
    succeeded: bool
    decline_code: str = ""


@dataclass
class History:
    replayed: list[StoredEvent]
    caused_by_service: int  # stored events left out: the service's own actions caused them
    charges: dict[str, list[Charge]] = field(default_factory=dict)  # invoice -> by time
    retry_rate: dict[str, float] = field(default_factory=dict)  # decline class -> rate
    # invoice -> what Stripe's API answers about its first failed attempt
    lookups: dict[str, FailureLookup] = field(default_factory=dict)
    # Every stored event of the window, those left out included (read, never replayed).
    stored: list[StoredEvent] = field(default_factory=list, repr=False)
    # Left out of both replays: no policy can change their outcome (`independent`).
    independent_accounts: list[str] = field(default_factory=list)
    independent_events: int = 0

    @property
    def events(self) -> int:
        return len(self.replayed) + self.caused_by_service + self.independent_events


def _object(body: str) -> dict:
    return json.loads(body)["data"]["object"]


def _created(body: str) -> datetime:
    return datetime.fromtimestamp(json.loads(body)["created"], tz=UTC)


def read_history(*, since: datetime, until: datetime | None, policy: Policy) -> History:
    """The window's events (by received_at) from the configured database, read only."""
    rows = WebhookEvent.objects.filter(received_at__gte=since)
    if until is not None:
        rows = rows.filter(received_at__lt=until)
    stored = [
        StoredEvent(event_id, type_, received_at, _created(body), body)
        for event_id, type_, received_at, body in rows.order_by("received_at", "pk").values_list(
            "stripe_event_id", "type", "received_at", "raw_body"
        )
    ]
    caused = caused_by_service(stored, since=since, until=until)
    replayed = [event for event in stored if event.stripe_event_id not in caused]
    charges = invoice_charges(stored)
    return History(
        replayed=replayed,
        caused_by_service=len(caused),
        charges=charges,
        retry_rate=retry_rates(charges, policy),
        lookups=failure_lookups(since=since, until=until),
        stored=stored,
    )


def failure_lookups(*, since: datetime, until: datetime | None) -> dict[str, FailureLookup]:
    """Each invoice's first failed attempt in the window with its decline data, as the
    service recorded it (from the charge's events, or from asking Stripe when those were
    late or never came): what Stripe's API answers a replay that asks."""
    rows = PaymentAttempt.objects.filter(
        outcome=PaymentAttempt.Outcome.FAILED, attempted_at__gte=since
    ).exclude(stripe_invoice_id="")
    if until is not None:
        rows = rows.filter(attempted_at__lt=until)
    lookups: dict[str, FailureLookup] = {}
    for row in rows.order_by("attempted_at", "pk"):
        if row.stripe_invoice_id in lookups or not (row.decline_code or row.failure_code):
            continue
        lookups[row.stripe_invoice_id] = FailureLookup(
            found=True,
            outcome="failed",
            decline_code=row.decline_code,
            failure_code=row.failure_code,
            advice_code=row.advice_code,
            network_advice_code=row.network_advice_code,
            network_decline_code=row.network_decline_code,
            card_brand=row.card_brand,
            payment_method=row.payment_method,
            charge_id=row.stripe_charge_id,
            payment_intent_id=row.stripe_payment_intent_id,
            attempted_at=row.attempted_at,
        )
    return lookups


def caused_by_service(
    stored: list[StoredEvent], *, since: datetime, until: datetime | None
) -> set[str]:
    """The ids of the stored events that Stripe sent because of the service's own retries,
    cancellations and reverts (its outbox says what it did, and when)."""
    done = OutboxItem.objects.filter(status=OutboxItem.Status.DONE, completed_at__gte=since)
    if until is not None:
        done = done.filter(completed_at__lt=until)
    retries, charge_ids, cancelled, voided = [], set(), [], set()
    for kind, payload, result, completed_at in done.values_list(
        "kind", "payload", "result", "completed_at"
    ):
        if kind == OutboxItem.Kind.PAYMENT_RETRY:
            succeeded = result.get("outcome") == "succeeded"
            retries.append((payload["stripe_invoice_id"], completed_at, succeeded))
            charge_ids.update(filter(None, (result.get("charge_id"),)))
        elif kind == OutboxItem.Kind.CANCEL_SUBSCRIPTION:
            cancelled.append((payload["subscription_id"], completed_at))
        elif kind == OutboxItem.Kind.REVERT_UPGRADE:
            voided.update(result.get("voided", []))
    caused: set[str] = set()
    by_key: dict[tuple[str, str], list[StoredEvent]] = defaultdict(list)
    for event in stored:
        obj = _object(event.body)
        if event.type.startswith("charge.") and obj.get("id") in charge_ids:
            caused.add(event.stripe_event_id)
        elif event.type in (*PAID_TYPES, "invoice.payment_failed"):
            outcome = "failed" if event.type == "invoice.payment_failed" else "paid"
            by_key[(obj["id"], outcome)].append(event)
        elif event.type == "customer.subscription.deleted":
            by_key[(obj["id"], "deleted")].append(event)
        elif event.type == "invoice.voided" and obj["id"] in voided:
            caused.add(event.stripe_event_id)
    for invoice_id, completed_at, succeeded in retries:
        _take_first(by_key[(invoice_id, "paid" if succeeded else "failed")], completed_at, caused)
    for subscription_id, completed_at in cancelled:
        _take_first(by_key[(subscription_id, "deleted")], completed_at, caused)
    return caused


def _take_first(events: list[StoredEvent], after: datetime, caused: set[str]) -> None:
    for event in events:
        if event.stripe_event_id in caused:
            continue
        if after - ECHO_EARLY <= event.created <= after + ECHO_WINDOW:
            caused.add(event.stripe_event_id)
            return


def invoice_charges(stored: list[StoredEvent]) -> dict[str, list[Charge]]:
    """Every charge on each invoice, from charge events (and the invoice's own paid event
    when no charge event says so, e.g. a customer paying on the hosted page)."""
    charges: dict[str, list[Charge]] = defaultdict(list)
    seen: set[str] = set()
    paid: dict[str, datetime] = {}
    for event in stored:
        if event.stripe_event_id in seen:
            continue
        seen.add(event.stripe_event_id)
        obj = _object(event.body)
        if event.type in ("charge.failed", "charge.succeeded") and obj.get("invoice"):
            at = _created_of(obj) or event.created
            ok = event.type == "charge.succeeded"
            code = (obj.get("outcome") or {}).get("reason") or obj.get("failure_code") or ""
            charges[obj["invoice"]].append(Charge(at, ok, "" if ok else code))
        elif event.type in PAID_TYPES and not obj.get("paid_out_of_band"):
            paid.setdefault(obj["id"], event.created)
    for invoice_id, at in paid.items():
        if not any(charge.succeeded for charge in charges[invoice_id]):
            charges[invoice_id].append(Charge(at, True))
    return {key: sorted(value, key=lambda c: c.at) for key, value in charges.items()}


def _created_of(obj: dict) -> datetime | None:
    created = obj.get("created")
    return datetime.fromtimestamp(created, tz=UTC) if isinstance(created, int) else None


def decline_class(charges: list[Charge], policy: Policy) -> str:
    first = next((charge for charge in charges if not charge.succeeded), None)
    if first is None:
        return ""
    code = first.decline_code
    return str(policy.decline_classes.get(code, policy.unknown_decline_class))


def retry_rates(charges: dict[str, list[Charge]], policy: Policy) -> dict[str, float]:
    """Per decline class of the invoice's first failure: the share of later charges on the
    invoice that succeeded, in the window (0 where none was made)."""
    tried, worked = Counter(), Counter()
    for invoice_charges_ in charges.values():
        cls = decline_class(invoice_charges_, policy)
        if not cls:
            continue
        first = next(i for i, charge in enumerate(invoice_charges_) if not charge.succeeded)
        for charge in invoice_charges_[first + 1 :]:
            tried[cls] += 1
            worked[cls] += charge.succeeded
    return {cls: worked[cls] / tried[cls] for cls in sorted(tried)}
