"""Import (backfill) the mirror from Stripe's API, through the same merge rules as webhooks.

Each object read from the API is parsed by the webhook parsers as the `data.object` of a
synthetic event version: `created` is the object's own latest change time on Stripe's
clock and the id is `backfill:<object id>`, which sorts before every `evt_...` id. So a
webhook about a later change wins over the import, an older webhook loses to it, and on a
tie (same second) the webhook wins: an import racing live webhooks converges to the same
rows in either order. The versions are deterministic, so a second run writes nothing.

Resumable: after each page the phase, customer and `starting_after` go to a cursor store;
a run with the same options continues there. This module knows nothing of the engine: the
caller gets the account ids and recomputes them.
"""

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import stripe
from django.db import transaction

from billing_events.facts import EventVersion
from billing_events.gateway.results import failure_lookup_as_dict
from billing_events.gateway.stripe_answers import FAILURE_EXPAND, failure_from_invoice
from billing_events.lookups import merge_looked_up_failure
from billing_events.mirror import merge_customer, merge_invoice, merge_subscription
from billing_events.models import Account
from billing_events.normalize import (
    parse_customer,
    parse_invoice,
    parse_subscription,
)
from billing_events.stripe_retry import RetryPolicy, call_with_retries
from core.locks import lock_account

PHASES = ("customers", "subscriptions", "invoices_open", "invoices_uncollectible", "invoices_paid")
# Times on each object that mark a change of its state (Stripe objects have no `updated`).
CHANGE_TIMES = {
    "customer": ("created",),
    "subscription": ("created", "start_date", "canceled_at", "ended_at"),
    "invoice": ("created",),
}
INVOICE_TRANSITIONS = ("finalized_at", "paid_at", "voided_at", "marked_uncollectible_at")


def backfill_version(
    obj: dict, *, now: datetime, also: tuple[int | None, ...] = ()
) -> EventVersion:
    """The synthetic event version of an object read from the API. Pure. Future times
    (a trial end, a scheduled cancel) are not changes yet: capped at `now`."""
    kind = str(obj.get("object") or "")
    times = [obj.get(name) for name in CHANGE_TIMES.get(kind, ("created",))]
    if kind == "invoice":
        transitions = obj.get("status_transitions") or {}
        times += [transitions.get(name) for name in INVOICE_TRANSITIONS]
    times += list(also)
    latest = max(int(t) for t in times if isinstance(t, int) and not isinstance(t, bool))
    changed = datetime.fromtimestamp(latest, UTC)
    return EventVersion(created=min(changed, now), event_id=f"backfill:{obj['id']}")


@dataclass(frozen=True)
class ImportOptions:
    customer_ids: tuple[str, ...] = ()
    created_since: datetime | None = None
    paid_history_days: int = 365
    page_size: int = 100

    def scope(self) -> str:
        """Names the cursor: a run with other options does not continue this one."""
        data = asdict(self)
        data["created_since"] = self.created_since.isoformat() if self.created_since else None
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


class CursorStore(Protocol):
    def load(self) -> dict | None: ...

    def save(self, state: dict) -> None: ...

    def clear(self) -> None: ...


@dataclass
class ImportStats:
    customers: int = 0
    subscriptions: int = 0
    invoices: int = 0
    failures: int = 0
    pages: int = 0
    api_calls: int = 0
    retries: int = 0
    account_ids: list[int] = field(default_factory=list)

    def as_state(self) -> dict:
        return asdict(self)


Progress = Callable[[str], None]


class StripeImporter:
    def __init__(
        self,
        *,
        api_key: str,
        api_base: str,
        options: ImportOptions,
        cursor: CursorStore,
        retry: RetryPolicy | None = None,
        progress: Progress | None = None,
        now: Callable[[], datetime],
        timeout_seconds: float = 30,
        expected_accounts: int | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the import needs STRIPE_API_KEY")
        self.options = options
        self.cursor = cursor
        self.retry = retry or RetryPolicy()
        self.progress = progress or (lambda line: None)
        self.now = now
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")},
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
            max_network_retries=0,  # our own backoff, so the sleep can be counted and injected
        )
        self.expected_accounts = expected_accounts
        self.stats = ImportStats()
        self._accounts: set[int] = set()
        self._started = time.monotonic()

    # --- driving -----------------------------------------------------------------------

    def run(self) -> ImportStats:
        """Import everything in scope; returns the totals (of this run and any it resumed)."""
        state = self.cursor.load() or {}
        if state:
            self.stats = ImportStats(**state["stats"])
            self._accounts = set(self.stats.account_ids)
            self.progress(f"resuming at phase={state['phase']} after={state.get('after') or '-'}")
        start = PHASES.index(state["phase"]) if state else 0
        for phase in PHASES[start:]:
            resume = state if state.get("phase") == phase else {}
            self._run_phase(phase, resume)
        self.stats.account_ids = sorted(self._accounts)
        return self.stats

    def _run_phase(self, phase: str, resume: dict) -> None:
        customers = self.options.customer_ids or (None,)
        first = customers.index(resume["customer"]) if resume.get("customer") else 0
        for customer in customers[first:]:
            after = resume.get("after") if customer == resume.get("customer") else None
            if phase == "customers" and customer is not None:
                obj = self._call(lambda c=customer: self._client.v1.customers.retrieve(c))
                self._import(phase, obj.to_dict())
                self._save(phase, customer, None)
                continue
            for page in self._pages(phase, customer, after):
                for obj in page.data:
                    self._import(phase, obj.to_dict())
                self.stats.pages += 1
                last = page.data[-1].id if page.data else after
                self._save(phase, customer, last)
                self._report(phase)

    def _pages(self, phase: str, customer: str | None, after: str | None) -> Iterator[Any]:
        """Stripe's pagination (ListObject.next_page, what auto_paging_iter runs on), one
        page at a time so each request goes through the backoff and the cursor moves."""
        params: dict[str, Any] = {"limit": self.options.page_size}
        if customer:
            params["customer"] = customer
        since = self.options.created_since
        if phase == "invoices_paid":
            history = self.now() - timedelta(days=self.options.paid_history_days)
            since = max(since, history) if since else history
        if since:
            params["created"] = {"gte": int(since.timestamp())}
        if after:
            params["starting_after"] = after
        if phase.startswith("invoices_"):
            params["status"] = phase.removeprefix("invoices_")
        resource = {
            "customers": self._client.v1.customers,
            "subscriptions": self._client.v1.subscriptions,
        }.get(phase, self._client.v1.invoices)
        page = self._call(lambda: resource.list(params=params))
        while True:
            yield page
            if not page.has_more or not page.data:
                return
            page = self._call(page.next_page)

    def _call(self, call: Callable[[], Any]) -> Any:
        def counted() -> Any:
            self.stats.api_calls += 1
            return call()

        def retried(wait: float) -> None:
            self.stats.retries += 1
            self.progress(f"stripe asked to slow down: retry in {wait:.1f}s")

        return call_with_retries(counted, self.retry, retried)

    def _save(self, phase: str, customer: str | None, after: str | None) -> None:
        self.stats.account_ids = sorted(self._accounts)
        self.cursor.save(
            {"phase": phase, "customer": customer, "after": after, "stats": self.stats.as_state()}
        )

    def _report(self, phase: str) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = len(self._accounts) / elapsed
        eta = "unknown"
        if self.expected_accounts and phase == "customers" and rate > 0:
            left = max(self.expected_accounts - len(self._accounts), 0)
            eta = f"{left / rate:.0f}s"
        self.progress(
            f"phase={phase} pages={self.stats.pages} api_calls={self.stats.api_calls} "
            f"accounts={len(self._accounts)} customers={self.stats.customers} "
            f"subscriptions={self.stats.subscriptions} invoices={self.stats.invoices} "
            f"rate={rate:.1f} accounts/s eta={eta} retries={self.stats.retries}"
        )

    # --- one object ----------------------------------------------------------------------

    def _import(self, phase: str, obj: dict) -> None:
        customer_id = obj["id"] if phase == "customers" else _id(obj.get("customer"))
        if not customer_id:
            return  # a guest invoice: nobody to dun
        if phase == "customers":
            self.stats.customers += 1
            with transaction.atomic():
                account = _locked_account(customer_id)
                merge_customer(
                    account, parse_customer(obj, backfill_version(obj, now=self.now()), {})
                )
        elif phase == "subscriptions":
            self.stats.subscriptions += 1
            fact = parse_subscription(obj, backfill_version(obj, now=self.now()))
            with transaction.atomic():
                account = _locked_account(customer_id)
                merge_subscription(account, fact)
        else:
            self.stats.invoices += 1
            account = self._import_invoice(obj, customer_id)
        self._accounts.add(account.pk)

    def _import_invoice(self, obj: dict, customer_id: str) -> Account:
        failure = None
        if obj.get("status") in ("open", "uncollectible") and (obj.get("attempt_count") or 0) > 0:
            # The list cannot expand this deep: one retrieve brings the latest attempt.
            expanded = self._call(
                lambda: self._client.v1.invoices.retrieve(
                    obj["id"], params={"expand": FAILURE_EXPAND}
                )
            )
            obj = expanded.to_dict()
            failure = failure_from_invoice(obj)
        attempted = failure.attempted_at if failure and failure.found else None
        version = backfill_version(
            obj, now=self.now(), also=(int(attempted.timestamp()) if attempted else None,)
        )
        fact = parse_invoice(obj, version)
        if attempted is not None:
            fact = replace(fact, payment_failed_at=attempted)
        with transaction.atomic():
            account = _locked_account(customer_id)
            merge_invoice(account, fact)
        if failure is not None and failure.found:
            self.stats.failures += 1
            merge_looked_up_failure(
                account_id=account.pk,
                stripe_invoice_id=fact.stripe_invoice_id,
                found=failure_lookup_as_dict(failure),
                at=self.now(),
            )
        return account


def _id(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _locked_account(customer_id: str) -> Account:
    """The same per-account lock as webhook processing and the engine."""
    account, _ = Account.objects.get_or_create(stripe_customer_id=customer_id)
    return lock_account(account.pk)
