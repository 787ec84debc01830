"""A real HTTP server on loopback standing in for a neighbour of the service (Account
Management, an outcome-event subscriber). Tests switch how it behaves."""

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Peer:
    status: int = 200
    delay_seconds: float = 0.0
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0  # answer 500 to this many requests first
    server: ThreadingHTTPServer | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Peer":
        peer = self

        class Handler(BaseHTTPRequestHandler):
            # The head and the body are two writes: no wait for a delayed ACK between them.
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if peer.delay_seconds:
                    time.sleep(peer.delay_seconds)
                status = peer.status
                if peer.fail_next > 0:
                    peer.fail_next -= 1
                    status = 500
                else:
                    peer.received.append(
                        Received(self.command, self.path, dict(self.headers.items()), body)
                    )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_PUT = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def http_peer():
    peer = Peer().start()
    yield peer
    peer.stop()
