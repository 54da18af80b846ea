"""``/_sandbox``: the control plane used by tests, benchmarks and the demo across processes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import httpx

from usage_orchestration.sandbox.core import Fault, json_response

if TYPE_CHECKING:
    from usage_orchestration.sandbox.core import Sandbox


def register(sb: Sandbox) -> None:
    @sb.route("_sandbox", "GET", "/_sandbox/health")
    def health(_req: httpx.Request, _p: dict[str, str]) -> httpx.Response:
        return json_response(200, {"ok": True, "seed": sb.seed})

    @sb.route("_sandbox", "POST", "/_sandbox/faults/(?P<api>[a-z_]+)")
    def add_fault(req: httpx.Request, p: dict[str, str]) -> httpx.Response:
        spec = json.loads(req.content or b"{}")
        sb.add_fault(p["api"], Fault(**spec))
        return json_response(200, {"queued": spec})

    @sb.route("_sandbox", "POST", "/_sandbox/latency/(?P<api>[a-z_]+)")
    def set_latency(req: httpx.Request, p: dict[str, str]) -> httpx.Response:
        sb.latency_s[p["api"]] = float(json.loads(req.content)["seconds"])
        return json_response(200, {"ok": True})

    @sb.route("_sandbox", "POST", "/_sandbox/clock")
    def set_clock(req: httpx.Request, _p: dict[str, str]) -> httpx.Response:
        now = json.loads(req.content).get("now")
        sb.set_now(datetime.fromisoformat(now) if now else None)
        return json_response(200, {"now": sb.now().isoformat()})

    @sb.route("_sandbox", "POST", "/_sandbox/state/(?P<api>[a-z_]+)")
    def set_state(req: httpx.Request, p: dict[str, str]) -> httpx.Response:
        with sb.lock:
            sb.state.setdefault(p["api"], {}).update(json.loads(req.content or b"{}"))
        return json_response(200, {"ok": True})

    @sb.route("_sandbox", "GET", "/_sandbox/received/(?P<api>[a-z_]+)")
    def received(_req: httpx.Request, p: dict[str, str]) -> httpx.Response:
        return json_response(200, sb.received(p["api"]))

    @sb.route("_sandbox", "GET", "/_sandbox/stats")
    def stats(_req: httpx.Request, _p: dict[str, str]) -> httpx.Response:
        with sb.lock:
            counts = [{"api": a, "status": s, "count": n} for (a, s), n in sb.counts.items()]
        return json_response(200, {"counts": counts})

    @sb.route("_sandbox", "POST", "/_sandbox/reset")
    def reset(_req: httpx.Request, _p: dict[str, str]) -> httpx.Response:
        sb.reset()
        return json_response(200, {"ok": True})
