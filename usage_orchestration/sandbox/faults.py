"""A fault-injecting HTTP proxy for chaos tests: loopback only, seeded, deterministic per seed.

``FaultProxy`` sits between the provider clients and a running ``SandboxServer`` and, per
request, either forwards it (with httpx) or injects one fault: a 5xx (500/502/503/504), a 429
with or without ``Retry-After``, an answer slower than the clients' timeout, a truncated 200
(with the Content-Length of the cut body, so it reaches the parser, or with the full length, so
the connection breaks), or a garbled 200 (non-JSON bytes). Which fault request number ``n``
gets depends only on (seed, n), so a sequential client meets the same faults every run.
Production code never imports this module (import-linter).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from usage_orchestration.sandbox.server import HOP_HEADERS, BackgroundServer, LoopbackHandler

STATUS_5XX = (500, 502, 503, 504)
BAD_BODY_KINDS = ("truncated", "truncated_conn", "garbled")
# The fault groups of FaultRates, in drawing order, and the kinds a faulted request of each
# group draws from (uniformly).
FAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "http_5xx": tuple(f"http_{s}" for s in STATUS_5XX),
    "http_429": ("http_429_retry_after", "http_429"),
    "timeout": ("timeout",),
    "bad_body": BAD_BODY_KINDS,
}
# Every kind the proxy can record.
FAULT_KINDS = tuple(kind for kinds in FAULT_GROUPS.values() for kind in kinds)


class FaultRates:
    """Per-request probabilities of each fault group, by ``FAULT_GROUPS`` key (a group not
    named is 0; the sum is at most 1), and the ``Retry-After`` values a 429 may carry."""

    def __init__(self, retry_after_s: tuple[int, ...] = (0, 1), **rates: float) -> None:
        unknown = sorted(set(rates) - set(FAULT_GROUPS))
        if unknown:
            raise ValueError(f"unknown fault groups {unknown}; known: {sorted(FAULT_GROUPS)}")
        self._rates = {group: float(rates.get(group, 0.0)) for group in FAULT_GROUPS}
        self.retry_after_s = retry_after_s
        values = tuple(self._rates.values())
        if any(r < 0 for r in values) or sum(values) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {values}")

    def rate(self, group: str) -> float:
        """The probability of fault group ``group`` (a ``FAULT_GROUPS`` key)."""
        return self._rates[group]


@dataclass
class FaultEvent:
    number: int  # the request's arrival number at the proxy (0-based)
    method: str
    path: str
    kind: str  # a FAULT_KINDS entry, or "forwarded"


def choose_fault(rates: FaultRates, seed: int, number: int) -> str | None:
    """The fault of request ``number`` under ``seed`` (None: forward it untouched)."""
    rng = random.Random(f"{seed}/{number}")  # str seeds hash deterministically (sha512)
    x = rng.random()
    for group, kinds in FAULT_GROUPS.items():
        rate = rates.rate(group)
        if x < rate:
            return rng.choice(kinds)
        x -= rate
    return None


@dataclass
class _State:
    upstream: str
    rates: FaultRates
    seed: int
    timeout_sleep_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_number: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    events: list[FaultEvent] = field(default_factory=list)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60.0))

    def take(self, method: str, path: str) -> tuple[int, str | None]:
        with self.lock:
            number = self.next_number
            self.next_number += 1
        kind = None if path.startswith("/_sandbox") else choose_fault(self.rates, self.seed, number)
        with self.lock:
            self.counts[kind or "forwarded"] += 1
            self.events.append(FaultEvent(number, method, path, kind or "forwarded"))
        return number, kind


def _handler_for(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(LoopbackHandler):
        # the forwarded body is decoded (httpx), so its encoding is not passed on either
        dropped_headers = HOP_HEADERS | {"content-encoding"}

        def _serve(self) -> None:
            body = self._request_body()
            number, kind = state.take(self.command, self.path)
            rng = random.Random(f"{state.seed}/{number}/body")
            try:
                if kind is not None and kind.startswith("http_"):
                    self._inject_status(kind, rng)
                    return
                if kind == "timeout":
                    time.sleep(state.timeout_sleep_s)  # the client has given up by now
                upstream = self._forward(body)
                if upstream is None:
                    return
                if kind in BAD_BODY_KINDS:
                    self._inject_body(kind, upstream, rng)
                else:
                    self._send(upstream.status_code, upstream.headers, upstream.content)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client left (a timeout): nothing to answer

        def _forward(self, body: bytes) -> httpx.Response | None:
            """The sandbox's answer; None (connection closed) once the proxy is stopping."""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            headers.pop("Host", None)
            try:
                return state.client.request(
                    self.command, state.upstream + self.path, headers=headers, content=body
                )
            except RuntimeError:  # the client was closed by stop() while this request slept
                self.close_connection = True
                return None

        def _inject_status(self, kind: str, rng: random.Random) -> None:
            status = 429 if kind.startswith("http_429") else int(kind.removeprefix("http_"))
            headers = {"Content-Type": "application/json"}
            if kind == "http_429_retry_after":
                headers["Retry-After"] = str(rng.choice(state.rates.retry_after_s))
            payload = f'{{"message": "chaos proxy: injected {status}"}}'.encode()
            self._send(status, headers, payload)

        def _inject_body(self, kind: str, upstream: httpx.Response, rng: random.Random) -> None:
            full = upstream.content
            headers = {"Content-Type": "application/json"}
            if kind == "garbled" or len(full) < 2:
                # an HTML gateway page or gzip bytes served without Content-Encoding
                junk = rng.choice((b"<html><body>Bad Gateway</body></html>", b"\x1f\x8b\x08\x00"))
                self._send(200, headers, junk + rng.randbytes(16))
                return
            cut = full[: rng.randrange(1, len(full))]  # a proper prefix of JSON never parses
            if kind == "truncated":
                self._send(200, headers, cut)
                return
            # promise the whole body, send part of it, hang up: the client's read breaks
            self._send(200, headers, cut, length=len(full))
            self.close_connection = True

    return Handler


class FaultProxy(BackgroundServer):
    """A running loopback proxy to ``upstream``; ``url`` is its base URL. ``counts`` holds how
    many requests met each fault kind (and ``forwarded``: passed through untouched)."""

    def __init__(
        self,
        upstream: str,
        rates: FaultRates,
        seed: int,
        *,
        timeout_sleep_s: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        if not host.startswith("127."):
            raise ValueError(f"the fault proxy only binds loopback addresses, not {host!r}")
        self._state = _State(upstream.rstrip("/"), rates, seed, timeout_sleep_s)
        self.httpd = ThreadingHTTPServer((host, 0), _handler_for(self._state))
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"

    @property
    def counts(self) -> Counter[str]:
        with self._state.lock:
            return Counter(self._state.counts)

    @property
    def events(self) -> list[FaultEvent]:
        with self._state.lock:
            return list(self._state.events)

    def faults(self) -> dict[str, int]:
        """Injected faults by kind (every kind, zeros included)."""
        counts = self.counts
        return {k: counts.get(k, 0) for k in FAULT_KINDS}

    def describe(self) -> str:
        """One line per injected fault: request number, method, path and kind."""
        return "\n".join(
            f"#{e.number} {e.method} {e.path[:120]} -> {e.kind}"
            for e in self.events
            if e.kind != "forwarded"
        )

    def stop(self) -> None:
        super().stop()
        self._state.client.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
