"""Helpers of the security tests: a canary listener, a TLS test server, a file-open recorder."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Canary:
    """TCP listeners that count every connection made to them (any protocol, even TLS)."""

    port: int
    hits: list[str] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _listen(family: int, address: str, port: int) -> socket.socket | None:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        return None
    sock.listen(64)
    return sock


@contextlib.contextmanager
def canary_listener(extra_ports: tuple[int, ...] = (443, 80)) -> Iterator[Canary]:
    """Listen on 127.0.0.1 and [::1] on a free port (and 443/80 where they are free)."""
    first = _listen(socket.AF_INET, "127.0.0.1", 0)
    assert first is not None
    port = int(first.getsockname()[1])
    canary = Canary(port, sockets=[first])
    for family, address, p in [(socket.AF_INET6, "::1", port)] + [
        (fam, addr, extra)
        for extra in extra_ports
        for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
    ]:
        sock = _listen(family, address, p)
        if sock is not None:
            canary.sockets.append(sock)
    stop = threading.Event()

    def serve(sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, peer = sock.accept()
            except (TimeoutError, OSError):
                continue
            canary.hits.append(f"{sock.getsockname()} <- {peer}")
            conn.close()

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in canary.sockets]
    for thread in threads:
        thread.start()
    try:
        yield canary
    finally:
        stop.set()
        for thread in threads:
            thread.join(2)
        canary.close()


def make_certificate(folder: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate for `host` (openssl CLI): (cert, key)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=DNS:{host}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


Route = Callable[[BaseHTTPRequestHandler], None]


@contextlib.contextmanager
def tls_server(
    cert: Path, key: str | Path, routes: dict[str, Route], address: str = "127.0.0.2"
) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS server on `address`; yields (port, the paths requested)."""
    requested: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            requested.append(self.path)
            route = routes.get(self.path.split("?")[0])
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            route(self)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((address, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        yield int(server.server_address[1]), requested
    finally:
        server.shutdown()
        server.server_close()


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        sent = {"Content-Length": str(len(body)), **(headers or {})}
        for name, value in sent.items():
            handler.send_header(name, value)
        handler.end_headers()
        if body:
            handler.wfile.write(body)

    return route


def chunked(total: int, piece: int = 65536) -> Route:
    """A 200 with Transfer-Encoding: chunked and `total` bytes of valid-looking JSONL."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        line = b'{"text": "' + b"a" * 80 + b'"}\n'
        sent = 0
        with contextlib.suppress(OSError):
            while sent < total:
                data = line * max(1, piece // len(line))
                handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                sent += len(data)
            handler.wfile.write(b"0\r\n\r\n")

    return route


def trickle(delay: float, pieces: int) -> Route:
    """A 200 that sends one byte every `delay` seconds (a slowloris download)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(pieces))
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(pieces):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(delay)

    return route


class OpenRecorder:
    """Records the paths the process opens (Python's `open` audit event) while active."""

    _installed: OpenRecorder | None = None

    def __init__(self) -> None:
        self.active = False
        self.opened: list[str] = []

    @classmethod
    def get(cls) -> OpenRecorder:
        if cls._installed is None:
            recorder = cls()

            def hook(event: str, args: tuple[Any, ...]) -> None:
                if recorder.active and event in ("open", "os.open") and args:
                    path = args[0]
                    if isinstance(path, bytes):
                        path = os.fsdecode(path)
                    if isinstance(path, str):
                        recorder.opened.append(path)

            sys.addaudithook(hook)
            cls._installed = recorder
        return cls._installed

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        self.opened = []
        self.active = True
        try:
            yield self.opened
        finally:
            self.active = False


# ---------------------------------------------------------------------------------------------
# A real API process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ApiProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def status(self, field_name: str) -> int:
        """A /proc/PID/status field in bytes (VmRSS, VmHWM ...)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field_name)

    def io(self, field_name: str) -> int:
        """A /proc/PID/io counter (rchar: bytes read through read-like system calls)."""
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise KeyError(field_name)

    def reset_peak_rss(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def running_api(
    env: dict[str, str],
    log: Path,
    *,
    args: tuple[str, ...] = ("--no-access-log",),
    app_target: str = "app.main:app",
) -> Iterator[ApiProcess]:
    """uvicorn app.main:app on a free port, in its own process group; stopped by its PID."""
    import signal
    import urllib.request

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app_target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    handle = log.open("wb")
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[2],
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the API did not start: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield ApiProcess(url, port, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        handle.close()


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to send before the answer (or the close)


def post_streaming(
    port: int,
    path: str,
    headers: dict[str, str],
    total: int,
    *,
    chunked: bool,
    piece: int = 65536,
    timeout: float = 30.0,
) -> RawAnswer:
    """POST a body of `total` bytes over a raw socket, stopping as soon as the server answers.

    The body is JSON-ish filler. With `chunked` the body uses Transfer-Encoding: chunked and no
    Content-Length; otherwise Content-Length declares `total`.
    """
    import select

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setblocking(False)
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *[f"{k}: {v}" for k, v in headers.items()]]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    pending = ("\r\n".join(head) + "\r\n\r\n").encode()
    data = b'{"text": "' + b"z" * (piece - 13) + b'"}\n'
    assert len(data) == piece
    sent_body, received = 0, b""
    deadline = time.monotonic() + timeout
    finished = False
    try:
        while time.monotonic() < deadline:
            writable = [sock] if not finished else []
            readable, can_write, _ = select.select([sock], writable, [], 0.5)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    chunk = b""
                if not chunk:
                    break
                received += chunk
                finished = True  # an answer has started: stop sending
                if _complete(received):
                    break
                continue
            if can_write and not finished:
                if not pending:
                    if sent_body >= total:
                        pending = b"0\r\n\r\n" if chunked else b""
                        finished = True
                        if not pending:
                            continue
                    else:
                        size = min(piece, total - sent_body)
                        body = data[:size]
                        assert len(body) == size
                        pending = (f"{size:x}\r\n".encode() + body + b"\r\n") if chunked else body
                        sent_body += size
                try:
                    written = sock.send(pending)
                    pending = pending[written:]
                except (BrokenPipeError, ConnectionResetError):
                    finished = True
                except BlockingIOError:
                    pass
    finally:
        sock.close()
    return _parse(received, sent_body)


def _complete(raw: bytes) -> bool:
    if b"\r\n\r\n" not in raw:
        return False
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _parse(raw: bytes, sent: int) -> RawAnswer:
    if not raw:
        return RawAnswer(0, {}, b"", sent)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status, headers, body, sent)
