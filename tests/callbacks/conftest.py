"""Fixtures for the callback tests: real HTTP(S) receivers on loopback and a fake resolver.

Every server here listens on 127.0.0.1 or ::1 only. Tests that need a non-loopback address
only ever pass it to the address guard, which refuses it before any connection is made.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server that records every request and answers according to the path:

    - `/status/NNN?location=..&retry_after=..&body=..`: that status (and headers, body)
    - `/slow`: waits 2 s, then 200
    - `/big`: 500 with a 4 MiB body
    - anything else: 200 "ok"
    """

    server: ThreadingHTTPServer
    scheme: str = "http"
    requests: list[Received] = field(default_factory=list)
    sni_names: list[str | None] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        if host is None:
            address = str(self.server.server_address[0])
            host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}{path}"


def _handler_for(receiver_ref: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def do_POST(self) -> None:
            receiver = receiver_ref[0]
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            receiver.requests.append(
                Received(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
            )
            # The client may stop reading on purpose (body cap, timeout).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._answer()

        do_GET = do_POST

        def _answer(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/slow":
                time.sleep(2.0)
                self._send(200, b"late")
            elif parts.path == "/big":
                self.send_response(500)
                self.send_header("Content-Length", str(4 * 1024 * 1024))
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"x" * 65536)
            elif parts.path.startswith("/status/"):
                status = int(parts.path.rsplit("/", 1)[1])
                extra = {}
                if "location" in query:
                    extra["Location"] = query["location"]
                if "retry_after" in query:
                    extra["Retry-After"] = query["retry_after"]
                self._send(status, query.get("body", "status body").encode(), extra)
            else:
                self._send(200, b"ok")

        def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            if status in (204, 304):
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _start(host: str, tls: ssl.SSLContext | None = None) -> tuple[Receiver, Callable[[], None]]:
    ref: list[Receiver] = []

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    server = Server((host, 0), _handler_for(ref))
    receiver = Receiver(server=server, scheme="https" if tls else "http")
    if tls is not None:

        def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            receiver.sni_names.append(name)

        tls.sni_callback = record_sni  # type: ignore[assignment]
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    ref.append(receiver)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return receiver, stop


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec, stop = _start("127.0.0.1")
    yield rec
    stop()


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    rec, stop = _start("127.0.0.1")
    yield rec
    stop()


@pytest.fixture
def receiver_v6() -> Iterator[Receiver]:
    try:
        rec, stop = _start("::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    yield rec
    stop()


@dataclass
class Certificate:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this (self-signed) certificate."""
        return ssl.create_default_context(cafile=str(self.cert))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


@pytest.fixture
def make_certificate(tmp_path: Path) -> Callable[[str], Certificate]:
    """A self-signed certificate for one DNS name, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")

    def make(name: str) -> Certificate:
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-subj",
                f"/CN={name}",
                "-addext",
                f"subjectAltName=DNS:{name}",
            ],
            check=True,
            capture_output=True,
        )
        return Certificate(cert=cert, key=key)

    return make


@pytest.fixture
def tls_receiver_factory() -> Iterator[Callable[[Certificate], Receiver]]:
    stops: list[Callable[[], None]] = []

    def start(certificate: Certificate) -> Receiver:
        rec, stop = _start("127.0.0.1", tls=certificate.server_context())
        stops.append(stop)
        return rec

    yield start
    for stop in stops:
        stop()


Answer = list[str] | Exception | Callable[[int], list[str]]


class FakeDNS:
    """Stands in for socket.getaddrinfo for chosen names; other names go to the real one.

    An answer is a list of IP strings, an exception to raise, or a function of the call
    number (1, 2, ...) returning a list, to model an answer that changes (DNS rebinding).
    """

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.answers: dict[str, Answer] = {}
        self.calls: Counter[str] = Counter()

    def __call__(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self.answers:
            return self.real(host, port, family, type, proto, flags)
        self.calls[name] += 1
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        ips = answer(self.calls[name]) if callable(answer) else answer
        port_number = int(port or 0)
        results: list[tuple[Any, ...]] = []
        for ip in ips:
            if ":" in ip:
                results.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port_number, 0, 0))
                )
            else:
                results.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port_number)))
        return results


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake
