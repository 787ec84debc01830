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

Use it with the `fake_stripe` fixture (import `fake_stripe_fixture` from this module into a
test module) and script each invoice:

    fake_stripe.script("in_x", [Decline("expired_card"), Ok()])

An invoice with nothing (left) scripted is paid (`default = Ok()`). Every request is recorded
in `requests` with its method, path, query, form body and headers.
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
        self._scripts: dict[str, list[Scenario]] = {}
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

    def add_subscription(self, subscription_id: str, price_ids: list[str]) -> list[str]:
        """A subscription with one item per price; returns the item ids."""
        template = samples.sample("subscription")["items"]["data"][0]
        items = []
        for price_id in price_ids:
            item = copy.deepcopy(template)
            item.update(id=self._new_id("si"), subscription=subscription_id)
            item["price"]["id"] = price_id
            items.append(item)
        with self._lock:
            self.subscriptions[subscription_id] = {"status": "active", "items": items}
        return [item["id"] for item in items]

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
            case "POST", ["v1", "invoices", invoice_id, "pay"]:
                return self._pay(invoice_id, request)
            case "GET", ["v1", "invoices", invoice_id]:
                return Answer(200, self._invoice(invoice_id))
            case "GET", ["v1", "subscription_items"]:
                return self._subscription_items(request.query.get("subscription", ""))
            case "GET", ["v1", "subscriptions", subscription_id]:
                return self._subscription_answer(subscription_id)
            case "POST", ["v1", "subscriptions", subscription_id]:
                return self._update_subscription(subscription_id, request.form)
            case "DELETE", ["v1", "subscriptions", subscription_id]:
                return self._cancel_subscription(subscription_id)
        return error_answer(
            404, "invalid_request_error", f"Unrecognized request URL ({request.method}: ...)"
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
        self._charge(invoice_id)
        with self._lock:
            self.invoice_status[invoice_id] = "paid"
        invoice = self._invoice(invoice_id)
        if "payments" in _expand(request.form):
            invoice["payments"] = {
                "object": "list",
                "data": [
                    {
                        "object": "invoice_payment",
                        "id": self._new_id("inpay"),
                        "invoice": invoice_id,
                        "is_default": True,
                        "status": "paid",
                        "amount_paid": invoice["amount_due"],
                        "amount_requested": invoice["amount_due"],
                        "currency": invoice["currency"],
                        "payment": {"type": "payment_intent", "payment_intent": _pi(invoice_id)},
                    }
                ],
                "has_more": False,
                "url": f"/v1/invoice_payments?invoice={invoice_id}",
            }
        return Answer(200, invoice)

    def _decline(self, invoice_id: str, decline: Decline) -> Answer:
        charge_id, _ = self._charge(invoice_id)
        payment_intent = samples.payment_intent_failed(
            id=_pi(invoice_id),
            customer="cus_fake",
            created=NOW,
            charge=charge_id,
            invoice=invoice_id,
            decline_code=decline.decline_code or decline.code,
            advice_code=decline.advice_code,
        )
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
            "payment_method": samples.sample("payment_method"),  # card details, as Stripe sends
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_fake",
        }
        return Answer(402, {"error": {k: v for k, v in error.items() if v is not None}})

    def _invoice(self, invoice_id: str) -> dict:
        with self._lock:
            status = self.invoice_status.setdefault(invoice_id, "open")
            attempts = self.attempt_count.get(invoice_id, 0)
        return samples.invoice(
            id=invoice_id,
            customer="cus_fake",
            created=NOW,
            status=status,
            attempt_count=attempts,
            status_at=NOW + 60,
        )

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

    def _update_subscription(self, subscription_id: str, form: dict[str, str]) -> Answer:
        state = self.subscriptions.get(subscription_id)
        if state is None:
            return _no_such("subscription", subscription_id)
        if state["status"] == "canceled":
            return error_answer(
                400,
                "invalid_request_error",
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        deleted = {
            form[f"items[{n}][id]"]
            for n in range(20)
            if form.get(f"items[{n}][deleted]") == "true" and f"items[{n}][id]" in form
        }
        known = {item["id"] for item in state["items"]}
        if unknown := deleted - known:
            return error_answer(
                400,
                "invalid_request_error",
                f"No such subscription item: '{sorted(unknown)[0]}'",
                code="resource_missing",
                param="items",
            )
        state["items"] = [item for item in state["items"] if item["id"] not in deleted]
        return self._subscription_answer(subscription_id)

    def _cancel_subscription(self, subscription_id: str) -> Answer:
        state = self.subscriptions.get(subscription_id)
        if state is None:
            return _no_such("subscription", subscription_id)
        if state["status"] == "canceled":
            # An approximation of Stripe's refusal; the gateway only relies on it being a 4xx.
            return error_answer(
                400,
                "invalid_request_error",
                f"This subscription is already canceled: '{subscription_id}'",
            )
        state["status"] = "canceled"
        return self._subscription_answer(subscription_id)


def _pi(invoice_id: str) -> str:
    return f"pi_for_{invoice_id}"


def _expand(form: dict[str, str]) -> set[str]:
    return {value for key, value in form.items() if key.startswith("expand[")}


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
