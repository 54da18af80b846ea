"""Delivery channels: PagerDuty Events API v2 and a Slack incoming webhook, over httpx.

Each ``send`` makes exactly one HTTP attempt and classifies the outcome; retries happen on later
sensor ticks (the outbox keeps the schedule). Secrets (the routing key, the webhook URL, which
embeds its token) never appear in an outcome's reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import httpx

from usage_orchestration.alerts.model import Alert
from usage_orchestration.providers.http import parse_retry_after

Outcome = Literal["delivered", "rejected", "retry"]
Action = Literal["trigger", "resolve"]

PD_SUMMARY_LIMIT = 1024
SLACK_TEXT_LIMIT = 40_000
SLACK_SECTION_LIMIT = 3_000
SLACK_BLOCKS_LIMIT = 50


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    status: int | None
    reason: str
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Notification:
    """What a channel needs to send one alert action."""

    action: Action
    dedup_key: str
    kind: str
    severity: str
    subject: str
    period: str
    summary: str
    details: dict[str, Any]
    links: list[dict[str, str]]

    @classmethod
    def trigger_of(cls, alert: Alert) -> Notification:
        """The trigger of an alert that is sent without the outbox (the outbox is down)."""
        return cls(
            action="trigger",
            dedup_key=alert.dedup_key,
            kind=alert.kind.value,
            severity=alert.severity,
            subject=alert.subject,
            period=alert.period,
            summary=alert.summary,
            details=alert.details,
            links=alert.links,
        )


class Channel(Protocol):
    name: str

    def send(self, n: Notification) -> SendResult: ...


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _classify(
    status: int, body: str, headers: httpx.Headers, secrets: list[str], now: datetime
) -> SendResult:
    reason = _redact(cut(body.strip(), 500), secrets)
    if status in (200, 202):
        return SendResult("delivered", status, reason or "ok")
    if status == 429 or status == 408 or status >= 500:
        after = parse_retry_after(headers.get("Retry-After"), now=now)
        return SendResult("retry", status, f"HTTP {status}: {reason}", after)
    return SendResult("rejected", status, f"HTTP {status}: {reason}")


class _HttpChannel:
    name = "http"

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        secrets: list[str] | None = None,
    ) -> None:
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._secrets = [s for s in (secrets or []) if s]

    def _post(self, url: str, body: dict[str, Any]) -> SendResult:
        now = datetime.now(UTC)
        try:
            resp = self._client.post(url, json=body)
        except httpx.TimeoutException as exc:
            return SendResult("retry", None, f"timeout: {type(exc).__name__}")
        except httpx.TransportError as exc:
            return SendResult(
                "retry",
                None,
                _redact(f"connection error: {type(exc).__name__}: {exc}", self._secrets),
            )
        return _classify(resp.status_code, resp.text, resp.headers, self._secrets, now)

    def close(self) -> None:
        self._client.close()


class PagerDutyChannel(_HttpChannel):
    """Events API v2: ``trigger`` with a payload, ``resolve`` by dedup_key. 202 is delivered;
    400 (invalid event) is rejected and not retried; 429 and 5xx are retried later."""

    name = "pagerduty"

    def __init__(
        self,
        events_url: str,
        routing_key: str,
        *,
        source: str = "usage_orchestration",
        client_url: str = "",
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(timeout_s=timeout_s, transport=transport, secrets=[routing_key])
        self.events_url = events_url
        self._routing_key = routing_key
        self.source = source
        self.client_url = client_url

    def __repr__(self) -> str:
        return f"PagerDutyChannel({self.events_url!r}, routing_key=***)"

    def event(self, n: Notification) -> dict[str, Any]:
        body: dict[str, Any] = {
            "routing_key": self._routing_key,
            "event_action": n.action,
            "dedup_key": n.dedup_key,
        }
        if n.action == "trigger":
            body["payload"] = {
                "summary": cut(n.summary, PD_SUMMARY_LIMIT),
                "source": self.source,
                "severity": n.severity,
                "timestamp": datetime.now(UTC).isoformat(),
                "component": n.kind,
                "group": n.subject,
                "class": n.kind,
                "custom_details": {"period": n.period, **n.details},
            }
            body["client"] = "usage_orchestration (Dagster)"
            if self.client_url:
                body["client_url"] = self.client_url
            if n.links:
                body["links"] = [
                    {"href": link["href"], "text": link.get("text", "")} for link in n.links
                ]
        return body

    def send(self, n: Notification) -> SendResult:
        if not self._routing_key:
            return SendResult("rejected", None, "no PagerDuty routing key (PAGERDUTY_ROUTING_KEY)")
        return self._post(self.events_url, self.event(n))


class SlackChannel(_HttpChannel):
    """An incoming webhook: one message per action, cut to Slack's limits (40,000 characters of
    text, 50 blocks, 3,000 characters per section)."""

    name = "slack"

    _ICON = {
        "critical": ":red_circle:",
        "error": ":red_circle:",
        "warning": ":warning:",
        "info": ":information_source:",
    }

    def __init__(
        self,
        webhook_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(timeout_s=timeout_s, transport=transport, secrets=[webhook_url])
        self._webhook_url = webhook_url

    def __repr__(self) -> str:
        return "SlackChannel(webhook_url=***)"

    def message(self, n: Notification) -> dict[str, Any]:
        if n.action == "resolve":
            head = f":white_check_mark: Resolved [{n.kind}] {n.summary}"
        else:
            head = f"{self._ICON.get(n.severity, '')} [{n.severity}] [{n.kind}] {n.summary}".strip()
        detail_lines = [f"*period:* {n.period}"] if n.period else []
        detail_lines += [f"*{k}:* {v}" for k, v in n.details.items()]
        detail_lines += [f"<{link['href']}|{link.get('text') or link['href']}>" for link in n.links]
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(head, SLACK_SECTION_LIMIT)}}
        ]
        if n.action == "trigger" and detail_lines:
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": cut("\n".join(detail_lines), SLACK_SECTION_LIMIT),
                    },
                }
            )
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": cut(f"dedup_key: {n.dedup_key}", 300)}],
            }
        )
        text = cut(
            head + ("\n" + "\n".join(detail_lines) if detail_lines else ""), SLACK_TEXT_LIMIT
        )
        return {"text": text, "blocks": blocks[:SLACK_BLOCKS_LIMIT]}

    def send(self, n: Notification) -> SendResult:
        if not self._webhook_url:
            return SendResult("rejected", None, "no Slack webhook configured (SLACK_WEBHOOK_URL)")
        return self._post(self._webhook_url, self.message(n))


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
