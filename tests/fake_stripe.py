"""A local HTTP server that answers as Stripe's API does, for testing StripeGateway.

A real `ThreadingHTTPServer` on 127.0.0.1 (free port), so the official SDK goes through its
whole HTTP stack: headers, form encoding, timeouts, error parsing. Bodies are Stripe's own
example objects (`billing_events.samples`) with the fields a scenario needs.

What it does as Stripe does:
- `Authorization: Bearer <API_KEY>` is required (401 otherwise).
- POST requests with an `Idempotency-Key` are stored: the same key replays the stored status
  and body (errors and 5xx included), a key still in flight answers 409, the same key with
  other parameters answers 400 `idempotency_error`; 429 and 409 are not stored.
- Paying an invoice that is already paid answers 400 "Invoice is already paid".
- Every executed pay leaves a charge on the invoice's payment intent; GET /v1/invoices/{id}
  honours `expand` as Stripe does for the API version in `Stripe-Version`: from 2025-03-31
  the includable `payments` list (`payments.data.payment.payment_intent`, its
  `latest_charge`), before it `charge` and `payment_intent`. Any other expansion answers 400.
- Voiding works on open and uncollectible invoices only; subscription updates take `items`
  to delete, change the quantity of, or add.
- GET /v1/events lists the events given to `add_event` (delivered by webhook or not) as
  Stripe does: newest first, filtered by `type`, `types[]` and `created[gt|gte|lt|lte]`,
  `limit` (default 10, at most 100) and `starting_after` pagination with `has_more`.

Use it with the `fake_stripe` fixture (import `fake_stripe_fixture` from this module into a
test module) and script each invoice:

    fake_stripe.script("in_x", [Decline("expired_card"), Ok()])

An invoice with nothing (left) scripted is paid (`default = Ok()`). A failure can also be put
on an invoice without a pay request (`register_failure`), and subscription updates refused
(`refuse_updates`). Every request is recorded in `requests` with its method, path, query,
form body and headers.

A book of existing objects (`add_customer`, `add_book_subscription`, `add_book_invoice`) is
listed by GET /v1/customers, /v1/subscriptions and /v1/invoices as Stripe lists: newest
first, `limit` 1-100 (default 10), `starting_after`, `has_more`, filtered by `customer`,
`status` (subscriptions: canceled ones only with `status=all` or `canceled`) and
`created[gte]`. With `rate_limit_every = n`, every n-th list request answers 429 (with
`Retry-After` when `retry_after` is set), as Stripe does now and then.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest

from billing_events import samples

API_KEY = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc"
NOW = 1_764_000_000
# From this API version on an invoice lists its payments instead of `charge`/`payment_intent`.
INVOICE_PAYMENTS_SINCE = "2025-03-31"
EXPANDABLE_INVOICE = {
    "payments",
    "payments.data.payment.payment_intent",
    "payments.data.payment.payment_intent.latest_charge",
    "payments.data.payment.charge",
}
EXPANDABLE_INVOICE_BEFORE_PAYMENTS = {"charge", "payment_intent", "payment_intent.latest_charge"}


# --- Scenarios for POST /v1/invoices/{id}/pay ---------------------------------------------


@dataclass(frozen=True)
class Ok:
    """The payment succeeds: 200 with the invoice, status paid."""


@dataclass(frozen=True)
class Decline:
    """The issuer declines: 402 with a card_error body as Stripe sends."""

    decline_code: str | None
    code: str = "card_declined"
    advice_code: str | None = None
    network_advice_code: str | None = None
    network_decline_code: str | None = None
    message: str = "Your card was declined."
    brand: str = "visa"


@dataclass(frozen=True)
class ServerError:
    """Stripe fails: 5xx with an api_error body (stored under the idempotency key)."""

    status: int = 500
    should_retry: str | None = "false"  # Stripe-Should-Retry header, None to omit


@dataclass(frozen=True)
class RateLimited:
    """429 rate_limit (not stored under the idempotency key)."""


@dataclass(frozen=True)
class Slow:
    """Answer `then` after `seconds` (the work completes even if the client gave up)."""

    seconds: float
    then: Ok | Decline | ServerError = field(default_factory=Ok)


Scenario = Ok | Decline | ServerError | RateLimited | Slow


# --- Recording ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]  # flattened as sent: "items[0][id]" -> "si_..."
    headers: dict[str, str]  # lower-cased names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(status: int, type: str, message: str, **fields) -> Answer:
    return Answer(status, {"error": {"type": type, "message": message, **fields}})


class FakeStripe:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.default: Scenario = Ok()
        self.requests: list[Recorded] = []
        self.invoice_status: dict[str, str] = {}
        self.attempt_count: dict[str, int] = {}
        self.charges: dict[str, list[str]] = {}  # invoice -> charge ids, one per executed pay
        self.subscriptions: dict[str, dict] = {}
        # invoice -> its payment intent and latest charge, as Stripe would return them
        self.latest_attempt: dict[str, tuple[dict, dict]] = {}
        self.events: list[dict] = []  # every event Stripe holds, in the order created
        self._update_refusals: dict[str, list] = {}  # subscription -> [status, message, times]
        self._scripts: dict[str, list[Scenario]] = {}
        # kind ("customers", "subscriptions", "invoices") -> id -> object, for the list calls
        self.book: dict[str, dict[str, dict]] = {
            "customers": {},
            "subscriptions": {},
            "invoices": {},
        }
        self.rate_limit_every: int | None = None
        self.retry_after: str | None = None
        self._list_requests = 0
        self._stored: dict[str, tuple[tuple, Answer]] = {}
        self._in_flight: set[str] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, invoice_id: str, scenarios: list[Scenario]) -> None:
        with self._lock:
            self._scripts.setdefault(invoice_id, []).extend(scenarios)
            self.invoice_status.setdefault(invoice_id, "open")

    def add_subscription(
        self,
        subscription_id: str,
        price_ids: list[str],
        *,
        quantities: dict[str, int] | None = None,
        status: str = "active",
    ) -> list[str]:
        """A subscription with one item per price (quantity 1 unless given); returns the
        item ids."""
        items = [
            self._new_item(subscription_id, price_id, (quantities or {}).get(price_id, 1))
            for price_id in price_ids
        ]
        with self._lock:
            self.subscriptions[subscription_id] = {"status": status, "items": items}
        return [item["id"] for item in items]

    def items_of(self, subscription_id: str) -> dict[str, int]:
        """price -> quantity of the subscription's items now."""
        return {
            item["price"]["id"]: item["quantity"]
            for item in self.subscriptions[subscription_id]["items"]
        }

    def refuse_updates(
        self,
        subscription_id: str,
        *,
        status: int = 400,
        message: str = "This update is not allowed.",
        times: int | None = None,
    ) -> None:
        """Answer updates of this subscription with this error (`times` times, or always)."""
        with self._lock:
            self._update_refusals[subscription_id] = [status, message, times]

    def register_failure(
        self,
        invoice_id: str,
        *,
        decline_code: str | None,
        code: str = "card_declined",
        advice_code: str | None = None,
        network_advice_code: str | None = None,
        network_decline_code: str | None = None,
        brand: str = "visa",
        created: int | None = None,
    ) -> str:
        """A declined charge on the open invoice, as if Stripe's own retry had failed (no pay
        request through this fake). Returns the charge id."""
        decline = Decline(
            decline_code,
            code=code,
            advice_code=advice_code,
            network_advice_code=network_advice_code,
            network_decline_code=network_decline_code,
            brand=brand,
        )
        with self._lock:
            self.invoice_status.setdefault(invoice_id, "open")
        charge_id, _, _ = self._record_decline(invoice_id, decline, created=created)
        return charge_id

    def add_customer(
        self,
        customer_id: str,
        *,
        created: int = NOW,
        default_payment_method: str | None = None,
        email: str | None = None,
    ) -> dict:
        obj = samples.customer(
            id=customer_id, created=created, default_payment_method=default_payment_method
        )
        obj["email"] = email or f"{customer_id}@example.com"
        with self._lock:
            self.book["customers"][customer_id] = obj
        return obj

    def add_book_subscription(self, obj: dict) -> dict:
        """A subscription object (e.g. `samples.subscription(...)`) to list."""
        with self._lock:
            self.book["subscriptions"][obj["id"]] = copy.deepcopy(obj)
        return obj

    def add_book_invoice(self, obj: dict) -> dict:
        """An invoice object (e.g. `samples.invoice(...)`) to list and to retrieve; a failure
        on it is put with `register_failure`."""
        with self._lock:
            self.book["invoices"][obj["id"]] = copy.deepcopy(obj)
            self.invoice_status[obj["id"]] = obj["status"]
            self.attempt_count[obj["id"]] = obj.get("attempt_count") or 0
        return obj

    def list_requests(self) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.method == "GET"
            and r.path in ("/v1/customers", "/v1/subscriptions", "/v1/invoices")
        ]

    def add_event(self, event: dict) -> dict:
        """An event Stripe holds and lists, whether or not it was ever delivered."""
        with self._lock:
            self.events.append(copy.deepcopy(event))
        return event

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def wait_idle(self, timeout: float = 5) -> None:
        """Wait until no request is being worked on (a slow one finishes its work)."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeStripe:
        fake = self

        class Handler(_StripeHandler):
            stripe = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes slow handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- answering -------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):010d}"

    def handle(self, request: Recorded) -> Answer:
        with self._lock:
            self.requests.append(request)
        if request.header("authorization") != f"Bearer {self.api_key}":
            return error_answer(
                401, "invalid_request_error", "Invalid API Key provided: sk_test_****"
            )
        key = request.header("idempotency-key") if request.method == "POST" else None
        if key is None:
            return self._route(request)
        fingerprint = (request.method, request.path, sorted(request.form.items()))
        with self._lock:
            if key in self._in_flight:
                return error_answer(
                    409,
                    "idempotency_error",
                    "There is currently another in-progress request using this Idempotent "
                    "Key (that probably means you submitted twice, and the other request is "
                    "still going through).",
                    code="idempotency_key_in_use",
                )
            if key in self._stored:
                stored_fingerprint, answer = self._stored[key]
                if stored_fingerprint != fingerprint:
                    return error_answer(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                return Answer(
                    answer.status, answer.body, {**answer.headers, "Idempotent-Replayed": "true"}
                )
            self._in_flight.add(key)
        try:
            answer = self._route(request)
            if answer.status not in (409, 429):
                with self._lock:
                    self._stored[key] = (fingerprint, answer)
        finally:
            with self._lock:
                self._in_flight.discard(key)
        return answer

    def _route(self, request: Recorded) -> Answer:
        parts = request.path.strip("/").split("/")
        match request.method, parts:
            case "GET", ["v1", ("customers" | "subscriptions" | "invoices") as kind]:
                return self._list(kind, request.query)
            case "GET", ["v1", "customers", customer_id]:
                obj = self.book["customers"].get(customer_id)
                return Answer(200, obj) if obj else _no_such("customer", customer_id)
            case "POST", ["v1", "invoices", invoice_id, "pay"]:
                return self._pay(invoice_id, request)
            case "GET", ["v1", "invoices", invoice_id]:
                return self._invoice_answer(invoice_id, request)
            case "POST", ["v1", "invoices", invoice_id, "void"]:
                return self._void(invoice_id)
            case "GET", ["v1", "subscription_items"]:
                return self._subscription_items(request.query.get("subscription", ""))
            case "GET", ["v1", "subscriptions", subscription_id]:
                return self._subscription_answer(subscription_id)
            case "POST", ["v1", "subscriptions", subscription_id]:
                return self._update_subscription(subscription_id, request.form)
            case "DELETE", ["v1", "subscriptions", subscription_id]:
                return self._cancel_subscription(subscription_id)
            case "GET", ["v1", "events"]:
                return self._list_events(request.query)
        return error_answer(
            404, "invalid_request_error", f"Unrecognized request URL ({request.method}: ...)"
        )

    def _list(self, kind: str, query: dict[str, str]) -> Answer:
        with self._lock:
            self._list_requests += 1
            limited = self.rate_limit_every and self._list_requests % self.rate_limit_every == 0
            objects = [copy.deepcopy(obj) for obj in self.book[kind].values()]
        if limited:
            answer = error_answer(
                429,
                "invalid_request_error",
                "Too many requests hit the API too quickly.",
                code="rate_limit",
            )
            if self.retry_after:
                answer.headers["Retry-After"] = self.retry_after
            return answer
        try:
            limit = int(query.get("limit", "10"))
            created_gte = int(query["created[gte]"]) if "created[gte]" in query else None
        except ValueError:
            return error_answer(400, "invalid_request_error", "Invalid integer", param="limit")
        if not 1 <= limit <= 100:
            return error_answer(
                400, "invalid_request_error", "Invalid limit: must be between 1 and 100"
            )
        status = query.get("status")
        if kind == "subscriptions" and status is None:
            objects = [o for o in objects if o["status"] not in ("canceled", "incomplete_expired")]
        elif status is not None and status != "all":
            objects = [o for o in objects if o["status"] == status]
        if "customer" in query:
            objects = [o for o in objects if o.get("customer") == query["customer"]]
        if created_gte is not None:
            objects = [o for o in objects if o["created"] >= created_gte]
        objects.sort(key=lambda o: (o["created"], o["id"]), reverse=True)
        if after := query.get("starting_after"):
            ids = [o["id"] for o in objects]
            if after not in ids:
                return _no_such(kind.rstrip("s"), after)
            objects = objects[ids.index(after) + 1 :]
        page = objects[:limit]
        return Answer(
            200,
            {
                "object": "list",
                "data": page,
                "has_more": len(objects) > limit,
                "url": f"/v1/{kind}",
            },
        )

    def _pay(self, invoice_id: str, request: Recorded) -> Answer:
        with self._lock:
            status = self.invoice_status.setdefault(invoice_id, "open")
            if status == "paid":
                return error_answer(400, "invalid_request_error", "Invoice is already paid")
            if status != "open":
                return error_answer(
                    400, "invalid_request_error", f"This invoice is {status} and cannot be paid."
                )
            script = self._scripts.get(invoice_id) or []
            scenario = script.pop(0) if script else self.default
        if isinstance(scenario, Slow):
            self._stopping.wait(scenario.seconds)
            scenario = scenario.then
        match scenario:
            case RateLimited():
                return error_answer(
                    429,
                    "invalid_request_error",
                    "Too many requests hit the API too quickly.",
                    code="rate_limit",
                )
            case ServerError(status=code, should_retry=should_retry):
                answer = error_answer(
                    code,
                    "api_error",
                    "An unknown error occurred while processing the request.",
                )
                if should_retry is not None:
                    answer.headers["Stripe-Should-Retry"] = should_retry
                return answer
            case Decline():
                return self._decline(invoice_id, scenario)
            case _:
                return self._paid(invoice_id, request)

    def _charge(self, invoice_id: str) -> tuple[str, int]:
        with self._lock:
            charge_id = self._new_id("ch")
            self.charges.setdefault(invoice_id, []).append(charge_id)
            self.attempt_count[invoice_id] = self.attempt_count.get(invoice_id, 0) + 1
            return charge_id, self.attempt_count[invoice_id]

    def _paid(self, invoice_id: str, request: Recorded) -> Answer:
        charge_id, attempt = self._charge(invoice_id)
        charge = samples.charge(
            id=charge_id,
            customer="cus_fake",
            created=NOW + attempt,
            invoice=invoice_id,
            status="succeeded",
            payment_intent=_pi(invoice_id),
        )
        payment_intent = samples.sample("payment_intent")
        payment_intent.update(
            id=_pi(invoice_id),
            customer="cus_fake",
            created=NOW,
            status="succeeded",
            latest_charge=charge_id,
            last_payment_error=None,
            metadata={"invoice": invoice_id},
        )
        with self._lock:
            self.invoice_status[invoice_id] = "paid"
            self.latest_attempt[invoice_id] = (payment_intent, charge)
        return Answer(200, self._invoice(invoice_id, _expand(request.form), _version(request)))

    def _record_decline(
        self, invoice_id: str, decline: Decline, *, created: int | None = None
    ) -> tuple[str, dict, dict]:
        """A failed charge and the intent's last_payment_error, kept as the latest attempt."""
        charge_id, attempt = self._charge(invoice_id)
        # Stripe gives a decline_code for issuer declines (code card_declined) only.
        decline_code = decline.decline_code
        method = samples.sample("payment_method")
        method["card"]["brand"] = method["card"]["display_brand"] = decline.brand
        charge = samples.charge(
            id=charge_id,
            customer="cus_fake",
            created=created or NOW + attempt,
            invoice=invoice_id,
            decline_code=decline_code,
            failure_code=decline.code,
            advice_code=decline.advice_code,
            network_advice_code=decline.network_advice_code,
            network_decline_code=decline.network_decline_code,
            payment_method=method["id"],
            payment_intent=_pi(invoice_id),
        )
        charge["failure_message"] = decline.message
        charge["payment_method_details"]["card"]["brand"] = decline.brand
        charge["payment_method_details"]["card"]["network"] = decline.brand
        payment_intent = samples.payment_intent_failed(
            id=_pi(invoice_id),
            customer="cus_fake",
            created=NOW,
            charge=charge_id,
            invoice=invoice_id,
            advice_code=decline.advice_code,
        )
        payment_intent["last_payment_error"].update(
            code=decline.code,
            decline_code=decline_code,
            network_advice_code=decline.network_advice_code,
            network_decline_code=decline.network_decline_code,
            payment_method=method,  # Stripe sends the whole payment method here
            message=decline.message,
        )
        with self._lock:
            self.latest_attempt[invoice_id] = (payment_intent, charge)
        return charge_id, payment_intent, method

    def _decline(self, invoice_id: str, decline: Decline) -> Answer:
        charge_id, payment_intent, method = self._record_decline(invoice_id, decline)
        error = {
            "type": "card_error",
            "code": decline.code,
            "decline_code": decline.decline_code,
            "advice_code": decline.advice_code,
            "network_advice_code": decline.network_advice_code,
            "network_decline_code": decline.network_decline_code,
            "charge": charge_id,
            "message": decline.message,
            "doc_url": f"https://stripe.com/docs/error-codes/{decline.code.replace('_', '-')}",
            "payment_intent": payment_intent,
            "payment_method": method,  # card details, as Stripe sends
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_fake",
        }
        return Answer(402, {"error": {k: v for k, v in error.items() if v is not None}})

    def _invoice_answer(self, invoice_id: str, request: Recorded) -> Answer:
        expand = _expand(request.query)
        version = _version(request)
        allowed = (
            EXPANDABLE_INVOICE
            if version >= INVOICE_PAYMENTS_SINCE
            else EXPANDABLE_INVOICE_BEFORE_PAYMENTS
        )
        if unknown := expand - allowed:
            return error_answer(
                400,
                "invalid_request_error",
                f"This property cannot be expanded ({sorted(unknown)[0]}).",
            )
        return Answer(200, self._invoice(invoice_id, expand, version))

    def _invoice(self, invoice_id: str, expand: set[str] = frozenset(), version: str = "") -> dict:
        with self._lock:
            status = self.invoice_status.setdefault(invoice_id, "open")
            attempts = self.attempt_count.get(invoice_id, 0)
            intent, charge = copy.deepcopy(self.latest_attempt.get(invoice_id, (None, None)))
            book = copy.deepcopy(self.book["invoices"].get(invoice_id))
        if book is not None:
            invoice = book
            invoice.update(status=status, attempt_count=attempts)
        else:
            invoice = samples.invoice(
                id=invoice_id,
                customer="cus_fake",
                created=NOW,
                status=status,
                attempt_count=attempts,
                status_at=NOW + 60,
            )
        if version and version < INVOICE_PAYMENTS_SINCE:
            if intent is not None and "payment_intent.latest_charge" in expand:
                intent["latest_charge"] = charge
            invoice["charge"] = _shown(charge, "charge" in expand)
            invoice["payment_intent"] = _shown(
                intent, bool(expand & {"payment_intent", "payment_intent.latest_charge"})
            )
            return invoice
        if any(path.startswith("payments") for path in expand):
            invoice["payments"] = self._payments(invoice, intent, charge, expand)
        return invoice

    def _payments(
        self, invoice: dict, intent: dict | None, charge: dict | None, expand: set[str]
    ) -> dict:
        """The includable `payments` list: the invoice's one (default) payment intent."""
        data = []
        if intent is not None:
            if "payments.data.payment.payment_intent.latest_charge" in expand:
                intent["latest_charge"] = charge
            paid = intent["status"] == "succeeded"
            data.append(
                {
                    "object": "invoice_payment",
                    "id": f"inpay_for_{invoice['id']}",
                    "created": charge["created"] if charge else NOW,
                    "invoice": invoice["id"],
                    "is_default": True,
                    "status": "paid" if paid else "open",
                    "amount_paid": invoice["amount_due"] if paid else None,
                    "amount_requested": invoice["amount_due"],
                    "currency": invoice["currency"],
                    "payment": {
                        "type": "payment_intent",
                        "payment_intent": _shown(
                            intent,
                            bool(
                                expand
                                & {
                                    "payments.data.payment.payment_intent",
                                    "payments.data.payment.payment_intent.latest_charge",
                                }
                            ),
                        ),
                    },
                }
            )
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "url": f"/v1/invoice_payments?invoice={invoice['id']}",
        }

    def _list_events(self, query: dict[str, str]) -> Answer:
        try:
            limit = int(query.get("limit", "10"))
            bounds = {
                op: int(query[f"created[{op}]"])
                for op in ("gt", "gte", "lt", "lte")
                if f"created[{op}]" in query
            }
        except ValueError:
            return error_answer(400, "invalid_request_error", "Invalid integer")
        if not 1 <= limit <= 100:
            return error_answer(
                400, "invalid_request_error", "This value must be between 1 and 100.", param="limit"
            )
        types = {value for key, value in query.items() if key.startswith("types[")}
        if len(types) > 20:
            return error_answer(
                400, "invalid_request_error", "You may pass at most 20 types.", param="types"
            )
        if "type" in query:
            types.add(query["type"])
        within = {
            "gt": lambda created, bound: created > bound,
            "gte": lambda created, bound: created >= bound,
            "lt": lambda created, bound: created < bound,
            "lte": lambda created, bound: created <= bound,
        }
        with self._lock:
            # Newest first; among events of one second, the one added last first.
            listed = [
                copy.deepcopy(event)
                for event in sorted(
                    reversed(self.events), key=lambda event: event["created"], reverse=True
                )
                if (not types or event["type"] in types)
                and all(within[op](event["created"], bound) for op, bound in bounds.items())
            ]
        if after := query.get("starting_after"):
            ids = [event["id"] for event in listed]
            if after not in ids:
                return _no_such("event", after)
            listed = listed[ids.index(after) + 1 :]
        return Answer(
            200,
            {
                "object": "list",
                "data": listed[:limit],
                "has_more": len(listed) > limit,
                "url": "/v1/events",
            },
        )

    def _void(self, invoice_id: str) -> Answer:
        with self._lock:
            status = self.invoice_status.setdefault(invoice_id, "open")
            if status not in ("open", "uncollectible"):
                # An approximation of Stripe's refusal; the gateway only relies on the 4xx.
                return error_answer(
                    400,
                    "invalid_request_error",
                    f"You can only void open or uncollectible invoices. This invoice is {status}.",
                )
            self.invoice_status[invoice_id] = "void"
        return Answer(200, self._invoice(invoice_id))

    def _subscription(self, subscription_id: str) -> dict | None:
        state = self.subscriptions.get(subscription_id)
        if state is None:
            return None
        obj = samples.subscription(
            id=subscription_id, customer="cus_fake", created=NOW, status=state["status"]
        )
        obj["items"]["data"] = copy.deepcopy(state["items"])
        obj["items"]["url"] = f"/v1/subscription_items?subscription={subscription_id}"
        return obj

    def _subscription_answer(self, subscription_id: str) -> Answer:
        obj = self._subscription(subscription_id)
        if obj is None:
            return _no_such("subscription", subscription_id)
        return Answer(200, obj)

    def _subscription_items(self, subscription_id: str) -> Answer:
        state = self.subscriptions.get(subscription_id)
        if state is None:
            return _no_such("subscription", subscription_id)
        return Answer(
            200,
            {
                "object": "list",
                "data": copy.deepcopy(state["items"]),
                "has_more": False,
                "url": "/v1/subscription_items",
            },
        )

    def _new_item(self, subscription_id: str, price_id: str, quantity: int) -> dict:
        item = samples.sample("subscription")["items"]["data"][0]
        item.update(id=self._new_id("si"), subscription=subscription_id, quantity=quantity)
        item["price"]["id"] = price_id
        return item

    def _refusal(self, subscription_id: str) -> Answer | None:
        with self._lock:
            refusal = self._update_refusals.get(subscription_id)
            if refusal is None:
                return None
            status, message, times = refusal
            if times is not None:
                refusal[2] = times - 1
                if refusal[2] <= 0:
                    del self._update_refusals[subscription_id]
        kind = "api_error" if status >= 500 else "invalid_request_error"
        return error_answer(status, kind, message)

    def _update_subscription(self, subscription_id: str, form: dict[str, str]) -> Answer:
        state = self.subscriptions.get(subscription_id)
        if state is None:
            return _no_such("subscription", subscription_id)
        if refusal := self._refusal(subscription_id):
            return refusal
        if state["status"] == "canceled":
            return error_answer(
                400,
                "invalid_request_error",
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        items = {item["id"]: item for item in copy.deepcopy(state["items"])}
        for change in _form_items(form):
            item_id = change.get("id")
            if item_id is None:
                price_id = change.get("price", "")
                if price_id in {item["price"]["id"] for item in items.values()}:
                    return error_answer(
                        400,
                        "invalid_request_error",
                        "Cannot add multiple subscription items with the same price.",
                        param="items",
                    )
                item = self._new_item(subscription_id, price_id, int(change.get("quantity", 1)))
                items[item["id"]] = item
            elif item_id not in items:
                return error_answer(
                    400,
                    "invalid_request_error",
                    f"No such subscription item: '{item_id}'",
                    code="resource_missing",
                    param="items",
                )
            elif change.get("deleted") == "true":
                del items[item_id]
            elif "quantity" in change:
                items[item_id]["quantity"] = int(change["quantity"])
        state["items"] = list(items.values())
        return self._subscription_answer(subscription_id)

    def _cancel_subscription(self, subscription_id: str) -> Answer:
        state = self.subscriptions.get(subscription_id)
        if state is None:
            return _no_such("subscription", subscription_id)
        if state["status"] in ("canceled", "incomplete_expired"):
            # An approximation of Stripe's refusal; the gateway only relies on it being a 4xx.
            return error_answer(
                400,
                "invalid_request_error",
                f"This subscription is already {state['status']}: '{subscription_id}'",
            )
        state["status"] = "canceled"
        return self._subscription_answer(subscription_id)


def _pi(invoice_id: str) -> str:
    return f"pi_for_{invoice_id}"


def _expand(form: dict[str, str]) -> set[str]:
    return {value for key, value in form.items() if key.startswith("expand[")}


def _version(request: Recorded) -> str:
    """The API version the request asks for (the SDK always sends Stripe-Version)."""
    return request.header("stripe-version") or ""


def _shown(obj: dict | None, expanded: bool) -> dict | str | None:
    """An expandable field: the object when expanded, else its id."""
    if obj is None:
        return None
    return obj if expanded else obj["id"]


def _form_items(form: dict[str, str]) -> list[dict[str, str]]:
    """`items[0][id]=si_1&items[0][deleted]=true` -> [{"id": "si_1", "deleted": "true"}]."""
    items: dict[int, dict[str, str]] = {}
    for key, value in form.items():
        if key.startswith("items[") and key.count("[") == 2:
            index, name = key[len("items[") : -1].split("][")
            items.setdefault(int(index), {})[name] = value
    return [items[index] for index in sorted(items)]


def _no_such(kind: str, id: str) -> Answer:
    return error_answer(
        404, "invalid_request_error", f"No such {kind}: '{id}'", code="resource_missing", param="id"
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class _StripeHandler(BaseHTTPRequestHandler):
    stripe: FakeStripe
    protocol_version = "HTTP/1.1"
    # The head and the body go out as two writes: with Nagle's algorithm on, the body waited
    # for the client's delayed ACK of the head, 40 ms on every call on a kept-alive
    # connection (47 ms a charge against 5 ms without). Real Stripe has no such stall.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        request = Recorded(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query)),
            form=dict(parse_qsl(body)),
            headers={name.lower(): value for name, value in self.headers.items()},
        )
        answer = self.stripe.handle(request)
        payload = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", f"req_fake{len(self.stripe.requests):06d}")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left; the work is done and stored all the same

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(name="fake_stripe")
def fake_stripe_fixture():
    """A started FakeStripe, stopped after the test."""
    fake = FakeStripe().start()
    yield fake
    fake.stop()
