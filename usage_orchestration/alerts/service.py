"""Alerting as plain functions the Dagster shell (and tests, and the CLI) calls: evaluate the rules
and record the result in the outbox (sensors: no sending, so a previewed tick has no effect
outside the outbox), and deliver what is due within a time budget (the ``deliver_alerts`` run)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy import Engine

from usage_orchestration.alerts import rules
from usage_orchestration.alerts.channels import (
    Channel,
    HttpOptions,
    OnCall,
    PagerDutyChannel,
    SlackChannel,
)
from usage_orchestration.alerts.model import Alert, AlertKind
from usage_orchestration.alerts.outbox import DeliveryReport, Outbox, SyncReport
from usage_orchestration.settings import UsageSettings
from usage_orchestration.settings.alerts import AlertSettings


def build_channels(
    settings: AlertSettings,
    *,
    pagerduty_routing_key: str,
    slack_webhook_url: str,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Channel]:
    http = HttpOptions(
        timeout_s=settings.timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        transport=transport,
        oncall=OnCall(owner=settings.owner, runbook_url=settings.runbook_url),
    )
    return {
        "pagerduty": PagerDutyChannel(
            settings.pagerduty_events_url,
            pagerduty_routing_key,
            source=settings.source,
            client_url=settings.dagster_ui_url,
            **http,
        ),
        "slack": SlackChannel(slack_webhook_url, **http),
    }


def close_channels(channels: dict[str, Channel]) -> None:
    """Close the channels' HTTP clients (a long-lived code server must not leak sockets)."""
    for channel in channels.values():
        close = getattr(channel, "close", None)
        if callable(close):
            close()


@dataclass
class Evaluation:
    """A named rule set: which kinds it owns and how to compute their desired alerts."""

    name: str
    kinds: tuple[AlertKind, ...]
    evaluate: Callable[[Engine, UsageSettings, datetime], list[Alert]]


BUDGETS = Evaluation(
    "budgets",
    rules.BUDGET_KINDS + rules.POOL_CAP_KINDS,
    lambda engine, s, _now: rules.budget_alerts(engine, s) + rules.pool_and_cap_alerts(engine, s),
)
BREAKS = Evaluation(
    "breaks", rules.BREAK_KINDS, lambda engine, s, _now: rules.break_alerts(engine, s)
)
STALE = Evaluation("stale", (AlertKind.STALE_DATA,), rules.stale_alerts)


@dataclass
class TickReport:
    sync: SyncReport = field(default_factory=SyncReport)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)

    def summary(self) -> str:
        d = self.delivery
        return (
            f"opened {len(self.sync.opened)}, escalated {len(self.sync.escalated)}, recorded "
            f"only {len(self.sync.recorded_only)}, resolved {len(self.sync.resolved)}, unchanged "
            f"{self.sync.unchanged}; delivered {len(d.delivered)}, rejected {len(d.rejected)}, "
            f"retrying {len(d.retrying)}"
            + (f", left for the next pass {d.deferred}" if d.deferred else "")
            + (f" (backing off: {', '.join(d.blocked_channels)})" if d.blocked_channels else "")
        )


def evaluate_and_record(
    evaluation: Evaluation,
    engine: Engine,
    settings: UsageSettings,
    now: datetime,
    extra: Sequence[Alert] = (),
    extra_kinds: Sequence[AlertKind] = (),
) -> TickReport:
    """Full evaluation of ``evaluation``'s kinds and the outbox sync; nothing is sent."""
    outbox = Outbox(engine, settings.alerts)
    alerts = evaluation.evaluate(engine, settings, now) + list(extra)
    kinds = [k.value for k in (*evaluation.kinds, *extra_kinds)]
    return TickReport(sync=outbox.sync(alerts, kinds=kinds, now=now))


def deliver(
    engine: Engine, settings: AlertSettings, channels: dict[str, Channel], now: datetime
) -> TickReport:
    """One delivery pass within ``settings.delivery_budget_s``."""
    outbox = Outbox(engine, settings)
    return TickReport(delivery=outbox.deliver_pending(channels, now=now))
