"""A real local webhook receiver (threaded http.server) that verifies every request with the
`standardwebhooks` library, as a customer's receiver would, and records what it got."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    payload: dict[str, Any] | None


@dataclass
class Receiver:
    """What the server got; `secrets` maps a path to the secret its requests must verify with."""

    port: int
    secrets: dict[str, str] = field(default_factory=dict)
    received: dict[str, list[Received]] = field(default_factory=dict)
    answer: int = 204
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, path: str) -> list[Received]:
        with self.lock:
            return list(self.received.get(path, []))

    def event_ids(self, path: str) -> list[str]:
        return [r.headers["webhook-id"] for r in self.got(path)]

    def wait_for(self, path: str, count: int, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.got(path)
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{path} got {len(self.got(path))} of {count} deliveries in time")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            path = self.path
            verified, payload = False, None
            secret = receiver.secrets.get(path)
            if secret is not None:
                try:
                    payload = Webhook(secret).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    payload = json.loads(body)
            with receiver.lock:
                receiver.received.setdefault(path, []).append(
                    Received(headers=headers, body=body, verified=verified, payload=payload)
                )
            self.send_response(receiver.answer if verified else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver(
    port: int = 0,
    receiver: Receiver | None = None,
    *,
    address: str = "127.0.0.1",
    tls: tuple[Path, Path] | None = None,
) -> Iterator[Receiver]:
    """Serve on `address`:`port` (0: any free port) until the block ends; `receiver` keeps what
    an earlier server on another port recorded (a receiver that comes back); `tls`: (cert, key)
    to serve HTTPS."""
    state = receiver or Receiver(port=0)
    server = ThreadingHTTPServer((address, port), _handler(state))
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
