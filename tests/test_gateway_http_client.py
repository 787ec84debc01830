"""The gateway's HTTP client (`billing_events/gateway/http_client.py`): a kept connection
per thread, opened again when the server closed it while idle, certificates checked on
HTTPS, and requests' client kept where a proxy is set. Real servers on loopback."""

import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from billing_events.gateway import StripeGateway
from billing_events.gateway.http_client import KeptConnectionClient
from tests.fake_stripe import API_KEY, Ok, fake_stripe_fixture  # noqa: F401


class _ClosesWhenIdle(BaseHTTPRequestHandler):
    """Answers one request on a kept-alive connection, then closes it (as a load balancer
    drops an idle connection) and says so through `closed`."""

    protocol_version = "HTTP/1.1"
    closed: threading.Event
    connections: list

    def do_POST(self) -> None:
        # Noted before answering: the client may assert as soon as it has read the answer.
        self.connections.append(self.client_address)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"id": "in_1", "status": "paid"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def finish(self) -> None:
        super().finish()
        self.request.shutdown(socket.SHUT_RDWR)
        self.closed.set()

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def closing_server():
    closed = threading.Event()
    handler = type("Handler", (_ClosesWhenIdle,), {"closed": closed, "connections": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def _post(client: KeptConnectionClient, url: str):
    return client.request("post", url, {"Content-Type": "application/x-www-form-urlencoded"}, "a=1")


def test_a_connection_the_server_closed_while_idle_is_opened_again(closing_server):
    server, handler = closing_server
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/invoices/in_1/pay"
    client = KeptConnectionClient(timeout=2)

    first = _post(client, url)
    assert handler.closed.wait(2)
    handler.closed.clear()
    second = _post(client, url)

    assert first[1] == second[1] == 200
    assert first[0] == second[0] == b'{"id": "in_1", "status": "paid"}'
    # Two connections: the dead one was not used for the second request.
    assert len(handler.connections) == 2
    assert handler.connections[0] != handler.connections[1]


def test_charges_reuse_one_connection_per_thread(fake_stripe):
    gateway = StripeGateway(API_KEY, fake_stripe.url, timeout_seconds=5)
    ports = set()

    def charge(k: int) -> str:
        fake_stripe.script(f"in_kept{k}", [Ok()])
        result = gateway.pay_invoice(invoice_id=f"in_kept{k}", idempotency_key=f"key-{k}")
        connection = gateway._client._requestor._client._local.connection
        ports.add((threading.get_ident(), connection.sock.getsockname()[1]))
        return result.outcome

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(charge, range(30)))

    assert outcomes == ["succeeded"] * 30
    assert all(fake_stripe.invoice_status[f"in_kept{k}"] == "paid" for k in range(30))
    threads = {thread for thread, _ in ports}
    # One connection per thread, kept across its charges (at most one per thread).
    assert len(ports) == len(threads) <= 3


def test_https_checks_the_certificate_and_the_host_name():
    client = KeptConnectionClient(timeout=2)
    connection = client._connection("https", "api.stripe.com")

    assert connection._context.verify_mode == ssl.CERT_REQUIRED
    assert connection._context.check_hostname is True
    assert connection.timeout == 2


def test_a_server_without_a_trusted_certificate_is_a_retryable_error(fake_stripe):
    # The fake speaks plain HTTP: a TLS handshake with it fails, as with any server that
    # cannot show a certificate from the SDK's bundle.
    host_port = fake_stripe.url.removeprefix("http://")
    gateway = StripeGateway(API_KEY, f"https://{host_port}", timeout_seconds=2)

    result = gateway.pay_invoice(invoice_id="in_tls", idempotency_key="k-tls")

    assert (result.outcome, result.retryable_error) == ("error", True)
    assert "could not reach Stripe" in result.message
    assert fake_stripe.requests_to("POST", "/v1/invoices/in_tls/pay") == []


def test_with_a_proxy_the_gateway_keeps_requests_client(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    gateway = StripeGateway(API_KEY, "https://api.stripe.com", timeout_seconds=2)

    assert isinstance(gateway._client._requestor._client, stripe.RequestsClient)
