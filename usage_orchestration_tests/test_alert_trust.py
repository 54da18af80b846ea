"""On-call trusts every page: run-failure keys and resolution by what was materialized, safe Slack
text, escalation, delivery passes bounded in time, previews that send nothing."""

# No `from __future__ import annotations`: Dagster reads the assets' real annotations.

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    AssetExecutionContext,
    DagsterEventType,
    DagsterInstance,
    DailyPartitionsDefinition,
    asset,
    build_run_status_sensor_context,
    build_sensor_context,
    materialize,
)

from usage_orchestration.alerts.channels import SlackChannel
from usage_orchestration.alerts.model import Alert, AlertKind
from usage_orchestration.alerts.outbox import Outbox
from usage_orchestration.alerts.service import build_channels
from usage_orchestration.defs.alerts import AlertChannelsResource, make_sensors
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.store import Warehouse

ROUTING_KEY = "sandbox-routing-key-000000000000"
DAYS = DailyPartitionsDefinition("2026-01-01")


@asset(partitions_def=DAYS)
def asset_a(context: AssetExecutionContext) -> None:
    if context.run.tags.get("test/fail") == "asset_a":
        raise RuntimeError("asset_a exploded")


@asset(partitions_def=DAYS)
def asset_b(context: AssetExecutionContext) -> None:
    return None


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


def _resources(settings: Any, db_url: str, slack: str = "") -> dict[str, Any]:
    return {
        "settings": settings,
        "warehouse": WarehouseResource(url=db_url),
        "alert_channels": AlertChannelsResource(
            pagerduty_routing_key=ROUTING_KEY, slack_webhook_url=slack
        ),
    }


def _status_context(instance: DagsterInstance, run_id: str, kind: Any, resources: Any) -> Any:
    run = instance.get_run_by_id(run_id)
    event = instance.get_records_for_run(run_id, of_type=kind).records[0]
    return build_run_status_sensor_context(
        sensor_name="s",
        dagster_event=event.event_log_entry.dagster_event,  # type: ignore[arg-type]
        dagster_instance=instance,
        dagster_run=run,  # type: ignore[arg-type]
        resources=resources,
    )


def _deliver(resources: dict[str, Any]) -> None:
    from usage_orchestration.defs.alerts import deliver_alerts_job

    assert deliver_alerts_job.execute_in_process(
        resources=resources, instance=DagsterInstance.ephemeral()
    ).success


def _pd(server: SandboxServer, action: str) -> list[dict[str, Any]]:
    return [e for e in server.sandbox.received("pagerduty") if e["event_action"] == action]


def test_failure_is_keyed_by_assets_and_days_and_only_their_success_resolves(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensors = {s.name: s for s in make_sensors(settings)}
    instance = DagsterInstance.ephemeral()
    day = "2026-05-19"
    failed = materialize(
        [asset_a, asset_b],
        instance=instance,
        partition_key=day,
        tags={"test/fail": "asset_a"},
        raise_on_error=False,
    )
    ctx = _status_context(instance, failed.run_id, DagsterEventType.RUN_FAILURE, resources)
    sensors["run_failure_alerts"](ctx.for_run_failure())
    _deliver(resources)
    [page] = _pd(sandbox_server, "trigger")
    assert (
        page["dedup_key"]
        == f"usage-orchestration/run_failure/job/{failed.dagster_run.job_name}/asset_a/{day}"
    )
    assert page["event"]["payload"]["summary"].count("asset_a exploded") == 1

    def success(selection: list[Any], partition: str) -> None:
        ok = materialize(selection, instance=instance, partition_key=partition)
        ctx = _status_context(instance, ok.run_id, DagsterEventType.RUN_SUCCESS, resources)
        sensors["run_success_resolves"](ctx)
        _deliver(resources)

    success([asset_b], day)  # another asset, same day: not a fix
    success([asset_a], "2026-05-18")  # the asset, another day: not a fix
    assert _pd(sandbox_server, "resolve") == []
    success([asset_a], day)
    [resolve] = _pd(sandbox_server, "resolve")
    assert resolve["dedup_key"] == page["dedup_key"]


def test_hostile_entity_name_reaches_slack_escaped(sandbox_server: SandboxServer) -> None:
    channel = SlackChannel(f"{sandbox_server.url}/slack/services/T0/B0/x")
    from usage_orchestration.alerts.channels import Notification

    name = "<!channel> <https://evil.example|click> & co"
    result = channel.send(
        Notification(
            action="trigger",
            dedup_key="k",
            kind="budget_threshold",
            severity="warning",
            subject=f"entity/{name}",
            period="2026-05",
            summary=f"{name} is past 80% of budget",
            details={"entity_name": name},
            links=[{"href": "http://ui/assets/budget_status?p=1|x>", "text": "<b>budget</b>"}],
        )
    )
    channel.close()
    assert result.outcome == "delivered"
    [got] = sandbox_server.sandbox.received("slack")
    texts = [got["message"]["text"]] + [
        (b.get("text") or {}).get("text", "") or b.get("elements", [{}])[0].get("text", "")
        for b in got["message"]["blocks"]
    ]
    for text in texts:
        assert "<!channel>" not in text and "<https://evil" not in text
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co" in texts[0]
    # the one link is the code's: its URL cannot close the markup, its label is plain text
    assert "<http://ui/assets/budget_status?p=1%7Cx%3E|&lt;b&gt;budget&lt;/b&gt;>" in texts[0]


def _break(severity: str) -> Alert:
    return Alert(
        kind=AlertKind.RECONCILIATION_BREAK,
        severity=severity,  # type: ignore[arg-type]
        subject="phala/e1/app_compute",
        period=datetime.now(UTC).date().isoformat(),
        summary=f"break ({severity})",
    )


def test_warning_that_grows_into_an_error_pages(db_url: str, sandbox_server: SandboxServer) -> None:
    settings = _settings(sandbox_server)
    Warehouse(db_url).ensure_schema()
    outbox = Outbox(Warehouse(db_url).engine, settings.alerts)
    channels = build_channels(
        settings.alerts,
        pagerduty_routing_key=ROUTING_KEY,
        slack_webhook_url=f"{sandbox_server.url}/slack/services/T0/B0/x",
    )
    now = datetime.now(UTC)
    kinds = [AlertKind.RECONCILIATION_BREAK.value]
    outbox.sync([_break("warning")], kinds=kinds, now=now)
    outbox.deliver_pending(channels, now=now)
    assert (
        len(sandbox_server.sandbox.received("slack")) == 1 and _pd(sandbox_server, "trigger") == []
    )
    report = outbox.sync([_break("error")], kinds=kinds, now=now)
    assert report.escalated == [_break("error").dedup_key]
    outbox.deliver_pending(channels, now=now)
    [page] = _pd(sandbox_server, "trigger")
    assert page["event"]["payload"]["severity"] == "error"
    outbox.sync([_break("error")], kinds=kinds, now=now)  # reported again: nothing new
    outbox.deliver_pending(channels, now=now)
    assert (
        len(_pd(sandbox_server, "trigger")) == 1
        and len(sandbox_server.sandbox.received("slack")) == 1
    )


def test_slow_pagerduty_keeps_a_delivery_pass_within_its_budget(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    settings = _settings(sandbox_server, delivery_budget_s=1.5, timeout_s=5)
    Warehouse(db_url).ensure_schema()
    outbox = Outbox(Warehouse(db_url).engine, settings.alerts)
    channels = build_channels(
        settings.alerts, pagerduty_routing_key=ROUTING_KEY, slack_webhook_url=""
    )
    now = datetime.now(UTC)
    alerts = [_break("error").model_copy(update={"subject": f"phala/e{i}/x"}) for i in range(8)]
    outbox.sync(alerts, kinds=[AlertKind.RECONCILIATION_BREAK.value], now=now)
    sandbox_server.sandbox.latency_s["pagerduty"] = 0.6
    started = time.monotonic()
    report = outbox.deliver_pending(channels, now=now)
    took = time.monotonic() - started
    assert took < 1.5 + 0.6 + 1.0, took  # the budget, one request in flight, a margin
    # a request cut short by the budget times out and is retried later; the rest never started
    assert 1 <= len(report.delivered) < 8
    assert len(report.delivered) + len(report.retrying) + report.deferred == 8
    assert outbox.due_count(now) == report.deferred  # left pending for the next pass
    sandbox_server.sandbox.latency_s["pagerduty"] = 0.0
    outbox.deliver_pending(channels, now=now + timedelta(minutes=5))
    assert outbox.due_count(now + timedelta(minutes=5)) == 0
    assert {e["dedup_key"] for e in _pd(sandbox_server, "trigger")} == {a.dedup_key for a in alerts}


def test_previewing_sensors_sends_nothing(db_url: str, sandbox_server: SandboxServer) -> None:
    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensors = {s.name: s for s in make_sensors(settings)}
    instance = DagsterInstance.ephemeral()
    failure = _break("error").model_copy(update={"kind": AlertKind.RUN_FAILURE})
    Outbox(WarehouseResource(url=db_url).get().engine, settings.alerts).open(
        [failure], now=datetime.now(UTC)
    )
    for name in ("budget_alerts", "reconciliation_alerts", "alert_delivery"):
        result = sensors[name](build_sensor_context(instance=instance, resources=resources))
    assert sandbox_server.sandbox.received("pagerduty") == []
    assert [r.job_name for r in result.run_requests] in ([None], ["deliver_alerts"])  # type: ignore[union-attr]


def test_slow_ledger_keeps_the_stale_data_tick_short(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    """The ledger's API answers after 8 s: the tick's sync probe gives up after its short timeout
    (one attempt), records the ledger as unreadable, and the tick ends in a few seconds."""
    settings = load_settings(
        alerts={
            "pagerduty_events_url": f"{sandbox_server.url}/pagerduty/v2/enqueue",
            "ledger_probe_timeout_s": 1.0,
        },
        ledger={"backend": "http", "api_base_url": sandbox_server.url + "/ledger"},
        neon={"enabled": False},
        forge={"enabled": False},
    )
    resources = {
        "settings": settings,
        "warehouse": WarehouseResource(url=db_url),
        "alert_channels": AlertChannelsResource(
            pagerduty_routing_key=ROUTING_KEY, ledger_api_token="sandbox-ledger-token"
        ),
    }
    Warehouse(db_url).ensure_schema()  # the first use migrates: not what is measured
    sandbox_server.sandbox.latency_s["ledger"] = 8.0
    sensor = {s.name: s for s in make_sensors(settings)}["stale_data_alerts"]
    started = time.monotonic()
    sensor(build_sensor_context(instance=DagsterInstance.ephemeral(), resources=resources))
    took = time.monotonic() - started
    sandbox_server.sandbox.latency_s["ledger"] = 0.0
    assert took < 3.0, took  # the assets' reader would wait up to 30 s x 5 attempts
    [unreadable] = Outbox(Warehouse(db_url).engine, settings.alerts).alerts(kind="ledger_sync")
    assert unreadable["threshold"] == "status_unreadable" and "timed out" in unreadable["summary"]
