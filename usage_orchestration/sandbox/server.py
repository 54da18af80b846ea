"""Serve a Sandbox on loopback with the standard library's threading HTTP server."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from usage_orchestration.sandbox.core import Sandbox


def _handler_for(sandbox: Sandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            host = self.headers.get("Host", "127.0.0.1")
            request = httpx.Request(
                self.command,
                f"http://{host}{self.path}",
                headers=list(self.headers.items()),
                content=body,
            )
            response = sandbox.handle(request)
            payload = response.content
            self.send_response(response.status_code)
            for k, v in response.headers.items():
                if k.lower() in ("content-length", "transfer-encoding", "connection"):
                    continue
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: the sandbox's journal records what matters

    return Handler


class SandboxServer:
    """A running loopback server; ``url`` is its base URL."""

    def __init__(self, sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> None:
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ValueError(f"the sandbox only binds loopback addresses, not {host!r}")
        self.sandbox = sandbox
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(sandbox))
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
