"""One alerting pass — evaluate rules, sync the outbox, deliver — as plain functions the Dagster
sensors (and tests, and the CLI) call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy import Engine

from usage_orchestration.alerts import rules
from usage_orchestration.alerts.channels import Channel, PagerDutyChannel, SlackChannel
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
    return {
        "pagerduty": PagerDutyChannel(
            settings.pagerduty_events_url,
            pagerduty_routing_key,
            source=settings.source,
            client_url=settings.dagster_ui_url,
            timeout_s=settings.timeout_s,
            transport=transport,
        ),
        "slack": SlackChannel(slack_webhook_url, timeout_s=settings.timeout_s, transport=transport),
    }


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
            f"opened {len(self.sync.opened)}, recorded only {len(self.sync.recorded_only)}, "
            f"resolved {len(self.sync.resolved)}, unchanged {self.sync.unchanged}; delivered "
            f"{len(d.delivered)}, rejected {len(d.rejected)}, retrying {len(d.retrying)}"
            + (f" (backing off: {', '.join(d.blocked_channels)})" if d.blocked_channels else "")
        )


def evaluate_and_deliver(
    evaluation: Evaluation,
    engine: Engine,
    settings: UsageSettings,
    channels: dict[str, Channel],
    now: datetime,
    extra: Sequence[Alert] = (),
    extra_kinds: Sequence[AlertKind] = (),
) -> TickReport:
    """Full evaluation of ``evaluation``'s kinds, outbox sync, then a delivery pass."""
    outbox = Outbox(engine, settings.alerts)
    alerts = evaluation.evaluate(engine, settings, now) + list(extra)
    kinds = [k.value for k in (*evaluation.kinds, *extra_kinds)]
    report = TickReport(sync=outbox.sync(alerts, kinds=kinds, now=now))
    report.delivery = outbox.deliver_pending(channels, now=now)
    return report
