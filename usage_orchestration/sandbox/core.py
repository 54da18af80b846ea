"""The sandbox's request router, fault knobs and request journal."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

Handler = Callable[[httpx.Request, dict[str, str]], httpx.Response]


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body, default=str).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


@dataclass
class Fault:
    """The next ``count`` requests to an API answer ``status`` (with ``body``/``headers``), or,
    when ``malformed`` is set, 200 with a body that breaks the contract."""

    status: int = 503
    count: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    malformed: str | None = None  # a raw body to answer with 200


@dataclass
class Route:
    api: str
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class Sandbox:
    """Every simulated API behind one ``handle(request) -> response``.

    Paths are prefixed by API: ``/phala``, ``/neon``, ``/forge``, ``/ledger``, ``/pagerduty``,
    ``/slack``; ``/_sandbox`` is the control plane (faults, clock, journal) used by tests and the
    demo across processes.
    """

    API_KEYS = {
        "phala": "sandbox-phala-key",
        "neon": "sandbox-neon-key",
        "forge": "sandbox-forge-token",
        "forge_email": "finance-bot@example.com",
        "ledger": "sandbox-ledger-token",
        "pagerduty": "sandbox-routing-key-000000000000",
    }

    def __init__(
        self, seed: int = 7, *, now: datetime | None = None, ledger_url: str | None = None
    ):
        self.seed = seed
        self.ledger_url = ledger_url
        self.lock = threading.RLock()
        self.routes: list[Route] = []
        self.faults: dict[str, deque[Fault]] = {}
        self.latency_s: dict[str, float] = {}
        self.state: dict[str, Any] = {}  # per-API mutable state (incidents, limiters)
        self.journal: dict[str, list[dict[str, Any]]] = {}
        self.counts: Counter[tuple[str, int]] = Counter()
        self._now = now
        from usage_orchestration.sandbox import (
            control,
            forge,
            neon,
            pagerduty,
            phala,
            slack,
            usage_api,
        )

        for module in (control, phala, neon, forge, usage_api, pagerduty, slack):
            module.register(self)

    # -- clock ------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self._now or datetime.now(UTC)

    def set_now(self, now: datetime | None) -> None:
        self._now = now

    # -- routing ----------------------------------------------------------------------------
    def route(self, api: str, method: str, path: str) -> Callable[[Handler], Handler]:
        pattern = re.compile("^" + path + "$")

        def deco(fn: Handler) -> Handler:
            self.routes.append(Route(api, method.upper(), pattern, fn))
            return fn

        return deco

    def add_fault(self, api: str, fault: Fault) -> None:
        with self.lock:
            self.faults.setdefault(api, deque()).append(fault)

    def record(self, api: str, entry: dict[str, Any]) -> None:
        with self.lock:
            self.journal.setdefault(api, []).append(entry)

    def received(self, api: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.journal.get(api, []))

    def request_count(self, api: str, status: int | None = None) -> int:
        with self.lock:
            return sum(n for (a, s), n in self.counts.items() if a == api and status in (None, s))

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.latency_s.clear()
            self.journal.clear()
            self.counts.clear()
            self.state.clear()

    def _take_fault(self, api: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(api)
            if not queue:
                return None
            fault = queue[0]
            fault.count -= 1
            if fault.count <= 0:
                queue.popleft()
            return fault

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        for r in self.routes:
            if r.method != request.method:
                continue
            m = r.pattern.match(path)
            if m is None:
                continue
            if r.api != "_sandbox":
                delay = self.latency_s.get(r.api, 0.0)
                if delay:
                    time.sleep(delay)
                fault = self._take_fault(r.api)
                if fault is not None:
                    response = self._fault_response(fault)
                else:
                    try:
                        response = r.handler(request, m.groupdict())
                    except Exception as exc:  # a sandbox bug must show, not hang a client
                        response = json_response(500, {"message": f"sandbox error: {exc!r}"})
                with self.lock:
                    self.counts[(r.api, response.status_code)] += 1
                return response
            return r.handler(request, m.groupdict())
        return json_response(404, {"message": f"no sandbox route for {request.method} {path}"})

    @staticmethod
    def _fault_response(fault: Fault) -> httpx.Response:
        if fault.malformed is not None:
            return httpx.Response(
                200, content=fault.malformed.encode(), headers={"Content-Type": "application/json"}
            )
        body = (
            fault.body if fault.body is not None else {"message": f"sandbox fault {fault.status}"}
        )
        return json_response(fault.status, body, fault.headers)

    def transport(self) -> httpx.MockTransport:
        """An httpx transport that answers from this sandbox in-process."""
        return httpx.MockTransport(self.handle)
