"""Serve a Sandbox on loopback with the standard library's threading HTTP server."""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import httpx

from usage_orchestration.sandbox.core import Sandbox
from usage_orchestration.settings.urls import loopback_host, url_host

# Hop-by-hop headers: never passed on (the handler sends the Content-Length of its own body).
HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class LoopbackHandler(BaseHTTPRequestHandler):
    """An HTTP/1.1 handler that answers every method with ``_serve`` and logs nothing: the
    sandbox's journal (and the fault proxy's events) record what matters."""

    protocol_version = "HTTP/1.1"
    dropped_headers: frozenset[str] = HOP_HEADERS  # headers of an answer not passed on

    def _serve(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        return

    def _request_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        headers: httpx.Headers | dict[str, str],
        payload: bytes,
        *,
        length: int | None = None,
    ) -> None:
        """Answer ``status`` with ``payload``; ``length`` claims another Content-Length."""
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in self.dropped_headers:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload) if length is None else length))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


def _handler_for(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(LoopbackHandler):
        def _serve(self) -> None:
            body = self._request_body()
            host = self.headers.get("Host", "127.0.0.1")
            request = httpx.Request(
                self.command,
                f"http://{host}{self.path}",
                headers=list(self.headers.items()),
                content=body,
            )
            response = sandbox.handle(request)
            self._send(response.status_code, response.headers, response.content)

    return Handler


class PortTakenError(OSError):
    """The sandbox's port is already taken (by another sandbox or anything else): the sandbox
    refuses to start rather than let the caller talk to someone else's data, clock and faults."""


def sandbox_answers(url: str) -> bool:
    """True when a sandbox answers its health check at ``url``."""
    try:
        return httpx.get(f"{url}/_sandbox/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _bind(host: str, port: int, sandbox: Sandbox) -> ThreadingHTTPServer:
    server_class = _IPv6Server if ":" in host else _Server
    try:
        return server_class((host, port), _handler_for(sandbox))
    except OSError as exc:
        url = f"http://{url_host(host, port)}"
        who = "another sandbox" if sandbox_answers(url) else "another process"
        raise PortTakenError(
            exc.errno,
            f"{url} is taken by {who}; stop it, or choose another port "
            "(USAGE_SANDBOX__PORT, or --port 0 for any free one)",
        ) from None


class _Server(ThreadingHTTPServer):
    # SO_REUSEADDR (the default) only lets a port in TIME_WAIT be bound again; on Linux a port
    # another server listens on still fails the bind. No SO_REUSEPORT: that would share it.
    allow_reuse_port = False
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # a client that hung up (a killed run, a timeout) is not the sandbox's error
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class BackgroundServer:
    """An ``httpd`` served from a daemon thread between ``start`` and ``stop``."""

    httpd: ThreadingHTTPServer
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SandboxServer(BackgroundServer):
    """A running loopback server; ``url`` is its base URL. A taken port raises
    ``PortTakenError`` (never shares another sandbox)."""

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        host = loopback_host(host)  # ValueError for anything but a loopback address
        self.sandbox = sandbox
        self.httpd = _bind(host, port, sandbox)
        self.host, self.port = host, int(self.httpd.server_address[1])
        self.url = f"http://{url_host(self.host, self.port)}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()
