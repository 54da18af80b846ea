"""A slow PagerDuty is never paged twice by the delivery pass's own budget: a send starts only
while its whole read timeout fits in what is left of the pass (found by the daemon e2e test with
PagerDuty answering in 6 s: the last send of a 20 s pass was cut to ~2 s, timed out after
PagerDuty took it, and its retry reached PagerDuty a second time)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from usage_orchestration.alerts.model import Alert, AlertKind
from usage_orchestration.alerts.outbox import Outbox
from usage_orchestration.alerts.service import build_channels
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.store import Warehouse

ROUTING_KEY = "sandbox-routing-key-000000000000"


def _settings(server: SandboxServer, **alerts: Any) -> Any:
    return load_settings(
        alerts={
            "pagerduty_events_url": f"{server.url}/pagerduty/v2/enqueue",
            "page_recent_days": 3650,
            **alerts,
        },
        neon={"enabled": False},
        forge={"enabled": False},
    )


def _breaks(n: int) -> list[Alert]:
    today = datetime.now(UTC).date().isoformat()
    return [
        Alert(
            kind=AlertKind.RECONCILIATION_BREAK,
            severity="error",
            subject=f"phala/e{i}/app_compute",
            period=today,
            summary=f"break {i}",
        )
        for i in range(n)
    ]


def test_a_slow_receiver_gets_each_trigger_once_across_passes(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    # each answer takes 0.4 s; a 1.0 s pass with a 0.5 s read timeout fits two sends, and the
    # third (0.2 s left) waits for the next pass instead of being cut short
    settings = _settings(sandbox_server, delivery_budget_s=1.0, timeout_s=0.5)
    Warehouse(db_url).ensure_schema()
    outbox = Outbox(Warehouse(db_url).engine, settings.alerts)
    channels = build_channels(
        settings.alerts, pagerduty_routing_key=ROUTING_KEY, slack_webhook_url=""
    )
    alerts = _breaks(5)
    now = datetime.now(UTC)
    outbox.sync(alerts, kinds=[AlertKind.RECONCILIATION_BREAK.value], now=now)
    sandbox_server.sandbox.latency_s["pagerduty"] = 0.4

    first = outbox.deliver_pending(channels, now=now)
    assert len(first.delivered) == 2 and not first.retrying, first
    assert first.deferred == 3
    later = now
    for _ in range(5):
        if not outbox.due_count(later):
            break
        later += timedelta(seconds=1)
        report = outbox.deliver_pending(channels, now=later)
        assert not report.retrying, report
    time.sleep(0.5)  # a request cut short would still land after its client gave up
    assert outbox.due_count(later) == 0
    keys = [
        e["dedup_key"]
        for e in sandbox_server.sandbox.received("pagerduty")
        if e["event_action"] == "trigger"
    ]
    assert sorted(keys) == sorted(a.dedup_key for a in alerts)  # each exactly once


def test_a_budget_shorter_than_the_read_timeout_still_sends(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    settings = _settings(sandbox_server, delivery_budget_s=1.0, timeout_s=5)
    Warehouse(db_url).ensure_schema()
    outbox = Outbox(Warehouse(db_url).engine, settings.alerts)
    channels = build_channels(
        settings.alerts, pagerduty_routing_key=ROUTING_KEY, slack_webhook_url=""
    )
    now = datetime.now(UTC)
    outbox.sync(_breaks(2), kinds=[AlertKind.RECONCILIATION_BREAK.value], now=now)
    report = outbox.deliver_pending(channels, now=now)
    assert len(report.delivered) >= 1, report
