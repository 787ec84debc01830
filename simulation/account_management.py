"""A stand-in for Account Management on loopback: a real HTTP server the service's outbox
talks to, which the simulation takes down (503) for the outage and brings back."""

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class AccountManagementStub:
    down: bool = False
    standing: dict[str, str] = field(default_factory=dict)  # customer -> last standing held
    requests: int = 0
    refused: int = 0
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None, "start() it first"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "AccountManagementStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            # The head and the body are two writes: no wait for a delayed ACK between them.
            disable_nagle_algorithm = True

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with stub.lock:
                    stub.requests += 1
                    if stub.down:
                        stub.refused += 1
                        status = 503
                    else:
                        parts = self.path.strip("/").split("/")  # accounts/{customer}/standing
                        standing = json.loads(body or b"{}").get("standing", "")
                        if len(parts) == 3 and parts[0] == "accounts" and standing:
                            stub.standing[parts[1]] = standing
                            status = 200
                        else:
                            status = 400
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
