"""PagerDuty Events API v2 (``POST /v2/enqueue``): validates events like the real receiver,
collapses triggers on an open incident by ``dedup_key``, and journals every accepted event."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from usage_orchestration.sandbox.core import json_response

if TYPE_CHECKING:
    from usage_orchestration.sandbox.core import Sandbox

_SEVERITIES = {"critical", "error", "warning", "info"}


def _invalid(errors: list[str]) -> httpx.Response:
    return json_response(
        400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    )


def register(sb: Sandbox) -> None:
    @sb.route("pagerduty", "POST", "/pagerduty/v2/enqueue")
    def enqueue(req: httpx.Request, _p: dict[str, str]) -> httpx.Response:
        try:
            event: dict[str, Any] = json.loads(req.content)
        except ValueError:
            return _invalid(["body is not JSON"])
        errors: list[str] = []
        if not event.get("routing_key"):
            errors.append("'routing_key' is missing or blank")
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        dedup_key = event.get("dedup_key")
        if action in ("acknowledge", "resolve") and not dedup_key:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action == "trigger":
            payload = event.get("payload") or {}
            for k in ("summary", "source", "severity"):
                if not payload.get(k):
                    errors.append(f"'payload.{k}' is missing or blank")
            if payload.get("severity") and payload["severity"] not in _SEVERITIES:
                errors.append("'payload.severity' is invalid")
            if len(str(payload.get("summary", ""))) > 1024:
                errors.append("'payload.summary' is longer than 1024 characters")
        if errors:
            return _invalid(errors)
        with sb.lock:
            incidents: dict[str, str] = sb.state.setdefault("pagerduty_incidents", {})
            status = incidents.get(dedup_key or "")
            if action == "trigger":
                collapsed = status == "triggered"
                incidents[dedup_key or f"auto-{len(incidents)}"] = "triggered"
            else:
                collapsed = status != "triggered"
                if status == "triggered":
                    incidents[dedup_key] = "resolved" if action == "resolve" else "triggered"
            sb.record(
                "pagerduty",
                {
                    "event_action": action,
                    "dedup_key": dedup_key,
                    "collapsed": collapsed,
                    "event": event,
                },
            )
        return json_response(
            202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
        )
