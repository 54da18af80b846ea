"""Delivery channels: PagerDuty Events API v2 and a Slack incoming webhook, over httpx.

Each ``send`` makes exactly one HTTP attempt and classifies the outcome; retries happen on later
sensor ticks (the outbox keeps the schedule). Secrets (the routing key, the webhook URL, which
embeds its token) never appear in an outcome's reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypedDict, Unpack

import httpx

from usage_orchestration.alerts.model import Alert
from usage_orchestration.providers.http import parse_retry_after

Outcome = Literal["delivered", "rejected", "retry"]
Action = Literal["trigger", "resolve"]

PD_SUMMARY_LIMIT = 1024
PD_FIELD_LIMIT = 255  # component, group, class, link texts
PD_DETAIL_VALUE_LIMIT = 1024
PD_DETAILS_LIMIT = 16_000  # the whole custom_details, as JSON (PagerDuty's event cap is 512 KB)
PD_DETAILS_KEYS = 40
PD_LINKS = 5
SLACK_DETAIL_LINES = 25
SLACK_VALUE_LIMIT = 500
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


RUNBOOK_FILE = "docs/runbook.md"


@dataclass(frozen=True)
class OnCall:
    """What every page carries beside the alert: who owns it, and the runbook section of its
    kind (a link when the runbook is published at ``runbook_url``)."""

    owner: str = ""
    runbook_url: str | None = None

    def runbook(self, kind: str) -> str:
        base = self.runbook_url or RUNBOOK_FILE
        return f"{base}#{kind}"

    def links(self, kind: str) -> list[dict[str, str]]:
        if not self.runbook_url:
            return []
        return [{"href": self.runbook(kind), "text": f"runbook: {kind}"}]

    def details(self, kind: str) -> dict[str, str]:
        out = {"runbook": self.runbook(kind)}
        if self.owner:
            out["owner"] = self.owner
        return out


class Channel(Protocol):
    name: str

    def send(self, n: Notification, timeout_s: float | None = None) -> SendResult: ...


_ENTITY_TAIL = re.compile(r"&[a-z]*$")


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters at a word boundary (a hard cut when the last word
    is very long), marked with an ellipsis; never ends inside an ``&amp;``-style entity."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    space = head.rfind(" ")
    if space >= limit * 0.6:
        head = head[:space]
    return _ENTITY_TAIL.sub("", head).rstrip() + "…"


def slack_escape(text: Any) -> str:
    """Slack mrkdwn control characters escaped, so data cannot mention (``<!channel>``), link
    (``<https://evil|click>``) or format through the markup."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_link(href: str, label: str) -> str:
    """A link the code builds: the URL cannot close the link or add a label, the label is
    plain text."""
    safe = "".join(c if c not in '<>| \t\n"' else f"%{ord(c):02X}" for c in href)
    return f"<{safe}|{slack_escape(label) or slack_escape(safe)}>"


def _detail_value(value: Any, limit: int) -> Any:
    """A details value within ``limit`` characters (structures cut as JSON text)."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, str) or len(text) > limit:
        return cut(text, limit)
    return value


def bounded_details(details: dict[str, Any]) -> dict[str, Any]:
    """custom_details within PagerDuty-friendly sizes: each value, the key count, the total."""
    out: dict[str, Any] = {}
    size = 2
    items = list(details.items())
    for i, (key, value) in enumerate(items):
        bounded = _detail_value(value, PD_DETAIL_VALUE_LIMIT)
        entry = len(json.dumps({cut(str(key), 100): bounded}, default=str)) + 2
        if i >= PD_DETAILS_KEYS or size + entry > PD_DETAILS_LIMIT:
            out["_truncated"] = f"{len(items) - i} more detail(s) left out"
            break
        out[cut(str(key), 100)] = bounded
        size += entry
    return out


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


class HttpOptions(TypedDict, total=False):
    """What every HTTP channel takes beside its own address and secret."""

    timeout_s: float  # default 10
    connect_timeout_s: float  # default 3, at most timeout_s
    transport: httpx.BaseTransport | None
    oncall: OnCall | None


class _HttpChannel:
    name = "http"

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        transport: httpx.BaseTransport | None = None,
        secrets: list[str] | None = None,
        oncall: OnCall | None = None,
    ) -> None:
        self.oncall = oncall or OnCall()
        self._timeout_s = timeout_s
        self._connect_timeout_s = min(connect_timeout_s, timeout_s)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=self._connect_timeout_s), transport=transport
        )
        self._secrets = [s for s in (secrets or []) if s]

    def _timeout(self, cap_s: float | None) -> httpx.Timeout:
        """The configured timeouts, shortened to what is left of a delivery pass's budget."""
        total = self._timeout_s if cap_s is None else max(min(self._timeout_s, cap_s), 0.5)
        return httpx.Timeout(total, connect=min(self._connect_timeout_s, total))

    def _unconfirmed(self, exc: httpx.TimeoutException) -> SendResult:
        """A timeout: nothing was sent (connect) — retry; or the answer never came — retry,
        since the receiver collapses repeats on the dedup key (Slack overrides this)."""
        return SendResult("retry", None, f"timeout: {type(exc).__name__}")

    def _post(self, url: str, body: dict[str, Any], timeout_s: float | None = None) -> SendResult:
        now = datetime.now(UTC)
        try:
            resp = self._client.post(url, json=body, timeout=self._timeout(timeout_s))
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return SendResult("retry", None, f"timeout: {type(exc).__name__}")
        except httpx.TimeoutException as exc:
            return self._unconfirmed(exc)
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
        **http: Unpack[HttpOptions],
    ) -> None:
        super().__init__(secrets=[routing_key], **http)
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
                "source": cut(self.source, PD_FIELD_LIMIT),
                "severity": n.severity,
                "timestamp": datetime.now(UTC).isoformat(),
                "component": cut(n.kind, PD_FIELD_LIMIT),
                "group": cut(n.subject, PD_FIELD_LIMIT),
                "class": cut(n.kind, PD_FIELD_LIMIT),
                "custom_details": bounded_details(
                    {"period": n.period, **self.oncall.details(n.kind), **n.details}
                ),
            }
            body["client"] = "usage_orchestration (Dagster)"
            if self.client_url:
                body["client_url"] = self.client_url
            extra = self.oncall.links(n.kind)
            links = [*n.links[: PD_LINKS - len(extra)], *extra]
            if links:
                body["links"] = [
                    {"href": link["href"], "text": cut(link.get("text", ""), PD_FIELD_LIMIT)}
                    for link in links
                ]
        return body

    def send(self, n: Notification, timeout_s: float | None = None) -> SendResult:
        if not self._routing_key:
            return SendResult("rejected", None, "no PagerDuty routing key (PAGERDUTY_ROUTING_KEY)")
        return self._post(self.events_url, self.event(n), timeout_s)


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
        **http: Unpack[HttpOptions],
    ) -> None:
        super().__init__(secrets=[webhook_url], **http)
        self._webhook_url = webhook_url

    def _unconfirmed(self, exc: httpx.TimeoutException) -> SendResult:
        # The message may have been posted and Slack has no dedup key: a retry could post it
        # twice to humans, so it is recorded (rejected, with the reason) and not retried.
        return SendResult(
            "rejected",
            None,
            f"unconfirmed: {type(exc).__name__} after sending; not retried so the message "
            "is not posted twice (check the channel)",
        )

    def __repr__(self) -> str:
        return "SlackChannel(webhook_url=***)"

    def message(self, n: Notification) -> dict[str, Any]:
        """The webhook body. Every data-derived string is escaped; only the links are markup,
        built here from the alert's links."""
        kind, summary = slack_escape(n.kind), slack_escape(n.summary)
        extra = self.oncall.links(n.kind)
        if n.action == "resolve":
            head = f":white_check_mark: Resolved [{kind}] {summary}"
        else:
            icon = self._ICON.get(n.severity, "")
            head = f"{icon} [{slack_escape(n.severity)}] [{kind}] {summary}".strip()
        detail_lines = [f"*period:* {slack_escape(n.period)}"] if n.period else []
        if self.oncall.owner:
            detail_lines.append(f"*owner:* {slack_escape(self.oncall.owner)}")
        if not self.oncall.runbook_url:  # else it is one of the links below
            detail_lines.append(f"*runbook:* {slack_escape(self.oncall.runbook(n.kind))}")
        detail_lines += [
            f"*{slack_escape(cut(str(k), 100))}:* {slack_escape(cut(str(v), SLACK_VALUE_LIMIT))}"
            for k, v in list(n.details.items())[:SLACK_DETAIL_LINES]
        ]
        detail_lines += [
            slack_link(link["href"], cut(link.get("text") or "", 200))
            for link in [*n.links[: 5 - len(extra)], *extra]
        ]
        blocks: list[dict[str, Any]] = [_section(cut(head, SLACK_SECTION_LIMIT))]
        if n.action == "trigger" and detail_lines:
            blocks.append(_section(_cut_lines(detail_lines, SLACK_SECTION_LIMIT)))
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": cut(f"dedup_key: {slack_escape(n.dedup_key)}", 300)}
                ],
            }
        )
        text = cut(head, SLACK_TEXT_LIMIT // 2)
        if detail_lines:
            text += "\n" + _cut_lines(detail_lines, SLACK_TEXT_LIMIT // 2)
        return {"text": text, "blocks": blocks[:SLACK_BLOCKS_LIMIT]}

    def send(self, n: Notification, timeout_s: float | None = None) -> SendResult:
        if not self._webhook_url:
            return SendResult("rejected", None, "no Slack webhook configured (SLACK_WEBHOOK_URL)")
        return self._post(self._webhook_url, self.message(n), timeout_s)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _cut_lines(lines: list[str], limit: int) -> str:
    """Whole lines up to ``limit`` characters (a cut line could split a link's markup)."""
    out: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit - 1:
            out.append("…")
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
