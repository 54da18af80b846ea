"""Alert sensors: thin wiring of ``usage_orchestration.alerts`` (rules, outbox, channels).

* ``budget_alerts``: budget thresholds, forecast overruns, credit pool depletion, provider caps;
* ``reconciliation_alerts``: reconciliation breaks over tolerance, spend anomalies;
* ``stale_data_alerts``: yesterday's partition missing by the deadline, ledger sync failures;
* ``run_failure_alerts`` / ``run_success_resolves``: failed runs (not those about to be retried),
  resolved when the same job succeeds for that partition (alone or within a range);
* ``alert_delivery``: retries of pending deliveries (429/5xx) with backoff.

Each evaluation sensor keeps a JSON cursor of the latest materialization it has seen of the
assets it watches, and re-evaluates when one changes (or every ``REEVALUATE_S`` for time-driven
conditions); a tick that changes nothing sends nothing. A sensor that fails records and sends a
``sensor_failure`` alert, then fails its tick so the UI shows it; its next good tick resolves it.
"""

import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from dagster import (
    AssetKey,
    ConfigurableResource,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    ResourceParam,
    RunFailureSensorContext,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from usage_orchestration.alerts import rules
from usage_orchestration.alerts.channels import Channel, Notification
from usage_orchestration.alerts.model import Alert, AlertKind, dedup_key
from usage_orchestration.alerts.outbox import Outbox
from usage_orchestration.alerts.service import (
    BREAKS,
    BUDGETS,
    STALE,
    Evaluation,
    TickReport,
    build_channels,
    evaluate_and_deliver,
)
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.settings import UsageSettings

REEVALUATE_S = 600
SECRET_ENV = ("PAGERDUTY_ROUTING_KEY", "SLACK_WEBHOOK_URL", "LEDGER_API_TOKEN")
WILL_RETRY_TAG = "dagster/will_retry"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


class AlertChannelsResource(ConfigurableResource):
    """Delivery secrets: ``PAGERDUTY_ROUTING_KEY``, ``SLACK_WEBHOOK_URL`` (the URL embeds its
    token) and, for the ledger's sync status over HTTP, ``LEDGER_API_TOKEN``. Empty means not
    configured: alerts for that channel are recorded as rejected with the reason."""

    pagerduty_routing_key: str = ""
    slack_webhook_url: str = ""
    ledger_api_token: str = ""

    def channels(self, settings: UsageSettings) -> dict[str, Channel]:
        return build_channels(
            settings.alerts,
            pagerduty_routing_key=self.pagerduty_routing_key,
            slack_webhook_url=self.slack_webhook_url,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _load_cursor(raw: str | None) -> dict[str, object]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def _latest_ids(instance: DagsterInstance, assets: Sequence[str]) -> dict[str, int]:
    """The storage id of each watched asset's latest materialization (a new partition or a
    re-materialization changes it)."""
    out: dict[str, int] = {}
    for a in assets:
        records = instance.fetch_materializations(AssetKey(a), limit=1).records
        if records:
            out[a] = records[0].storage_id
    return out


def _sensor_failure_key(name: str) -> str:
    return dedup_key(AlertKind.SENSOR_FAILURE.value, f"sensor/{name}", "")


class SensorKit:
    """What every alert sensor is handed: the settings, the warehouse, the delivery channels
    (built on first use) and the ledger's API token."""

    def __init__(
        self,
        settings: UsageSettings,
        warehouse: WarehouseResource,
        alert_channels: AlertChannelsResource,
    ) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.alert_channels = alert_channels

    @cached_property
    def channels(self) -> dict[str, Channel]:
        return self.alert_channels.channels(self.settings)

    def outbox(self) -> Outbox:
        return Outbox(self.warehouse.get().engine, self.settings.alerts)


def _report_sensor_failure(name: str, exc: Exception, kit: SensorKit) -> None:
    """Record and send a sensor_failure alert; if even the outbox is unreachable, send it
    directly (the receiver collapses repeats on the dedup key)."""
    alert = rules.sensor_failure_alert(
        name, _redacted(f"{type(exc).__name__}: {exc}", kit.settings), kit.settings
    )
    try:
        _open_and_deliver(alert, kit)
    except Exception:
        channel = kit.channels.get(kit.settings.alerts.routing[alert.severity])
        if channel is not None:
            channel.send(Notification.trigger_of(alert))


def _open_and_deliver(alert: Alert, kit: SensorKit) -> TickReport:
    """Record an event's alert (without resolving others) and send what is due."""
    now = _now()
    outbox = kit.outbox()
    outbox.open([alert], now=now)
    return TickReport(delivery=outbox.deliver_pending(kit.channels, now=now))


def _redacted(text: str, settings: UsageSettings) -> str:
    """Database passwords (in the warehouse and ledger URLs) and any secret from the environment
    masked out of an error message before it becomes an alert."""
    from sqlalchemy.engine import make_url

    secrets = [os.environ.get(n, "") for n in SECRET_ENV]
    for url in (settings.warehouse_url, settings.ledger.database_url):
        try:
            secrets.append(make_url(url).password or "")
        except Exception:  # an unparsable URL: nothing to mask from it
            continue
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _guarded(
    name: str, kit: SensorKit, body: Callable[[], SensorResult | SkipReason]
) -> SensorResult | SkipReason:
    try:
        result = body()
    except Exception as exc:
        _report_sensor_failure(name, exc, kit)
        raise
    outbox = kit.outbox()
    if outbox.resolve([_sensor_failure_key(name)], now=_now()):
        outbox.deliver_pending(kit.channels, now=_now())
    return result


def _evaluation_tick(
    context: SensorEvaluationContext,
    evaluation: Evaluation,
    watched: Sequence[str],
    kit: SensorKit,
    extra: Callable[[], tuple[list, list[AlertKind]]] | None = None,
    always: bool = False,
) -> SensorResult:
    now = _now()
    cursor = _load_cursor(context.cursor)
    seen = _latest_ids(context.instance, watched)
    last = cursor.get("evaluated_at")
    stale = last is None or now - datetime.fromisoformat(str(last)) >= timedelta(
        seconds=REEVALUATE_S
    )
    if always or seen != cursor.get("seen") or stale:
        alerts, kinds = extra() if extra else ([], [])
        report = evaluate_and_deliver(
            evaluation,
            kit.warehouse.get().engine,
            kit.settings,
            kit.channels,
            now,
            alerts,
            kinds,
        )
        new_cursor = {"seen": seen, "evaluated_at": now.isoformat()}
        what = f"evaluated {evaluation.name}: "
    else:
        report = TickReport()
        report.delivery = kit.outbox().deliver_pending(kit.channels, now=now)
        new_cursor = {**cursor, "seen": seen}
        what = "no new materializations; "
    message = what + report.summary()
    context.log.info(message)
    return SensorResult(
        skip_reason=SkipReason(message), cursor=json.dumps(new_cursor, sort_keys=True)
    )


# Asset keys whose materializations change what the rules see (budget_status also writes
# credit_pool_status; usage_anomalies writes the usage_anomaly table).
BUDGET_ASSETS = ("budget_status", "provider_cap_status")
BREAK_ASSETS = ("usage_reconciliation", "usage_anomalies")


def _alert_sensor(
    decorator: Callable[[Callable[..., Any]], Any], tick: Callable[[Any, SensorKit], Any]
) -> Any:
    """``tick`` as a sensor of ``decorator`` (sensor, run_failure_sensor, run_status_sensor),
    with the resources every alert sensor needs."""

    def alert_sensor(
        context: Any,
        settings: ResourceParam[UsageSettings],
        warehouse: WarehouseResource,
        alert_channels: AlertChannelsResource,
    ) -> Any:
        return tick(context, SensorKit(settings, warehouse, alert_channels))

    return decorator(alert_sensor)


def _running_sensor(
    name: str, interval: int, description: str, decorator: Callable[..., Any] = sensor, **extra: Any
) -> Callable[..., Any]:
    """``decorator``'s arguments for an alert sensor: on from the start, at ``interval``."""
    return decorator(
        name=name,
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
        **extra,
    )


def _evaluation_sensor(
    name: str, description: str, evaluation: Evaluation, watched: Sequence[str], interval: int
) -> SensorDefinition:
    """A sensor that re-evaluates ``evaluation``'s rules when ``watched`` assets materialize."""

    def tick(context: SensorEvaluationContext, kit: SensorKit) -> SensorResult | SkipReason:
        return _guarded(name, kit, lambda: _evaluation_tick(context, evaluation, watched, kit))

    return _alert_sensor(_running_sensor(name, interval, description), tick)


def _ledger_sync_alerts(
    settings: UsageSettings, ledger_api_token: str | None
) -> tuple[list[Alert], list[AlertKind]]:
    """The ledger's License Manager sync status as alerts (a ledger it cannot reach is one)."""
    from usage_orchestration.ledger.factory import make_ledger_reader

    reader = None
    try:
        reader = make_ledger_reader(settings, ledger_api_token)
        status = reader.sync_status()
    except Exception as exc:  # the ledger itself is unreachable: that is the alert
        return [rules.ledger_sync_error_alert(f"{type(exc).__name__}: {exc}")], [
            AlertKind.LEDGER_SYNC
        ]
    finally:
        close = getattr(reader, "close", None)
        if callable(close):
            close()
    return rules.ledger_sync_alerts(status, settings), [AlertKind.LEDGER_SYNC]


def _stale_data_tick(context: SensorEvaluationContext, kit: SensorKit) -> SensorResult | SkipReason:
    token = kit.alert_channels.ledger_api_token or None
    # Time-driven (deadlines, sync status): a full evaluation on every tick.
    return _guarded(
        "stale_data_alerts",
        kit,
        lambda: _evaluation_tick(
            context,
            STALE,
            (),
            kit,
            lambda: _ledger_sync_alerts(kit.settings, token),
            always=True,
        ),
    )


def _delivery_tick(context: SensorEvaluationContext, kit: SensorKit) -> SensorResult | SkipReason:
    def body() -> SensorResult:
        now = _now()
        report = TickReport()
        report.delivery = kit.outbox().deliver_pending(kit.channels, now=now)
        cursor = json.dumps(
            {"last_pass": now.isoformat(), "delivered": len(report.delivery.delivered)}
        )
        return SensorResult(skip_reason=SkipReason(report.summary()), cursor=cursor)

    return _guarded("alert_delivery", kit, body)


def _run_failure_tick(context: RunFailureSensorContext, kit: SensorKit) -> SkipReason | None:
    run = context.dagster_run
    if run.tags.get(WILL_RETRY_TAG) == "true":
        return SkipReason(f"run {run.run_id} will be retried: no alert")
    message = _failure_message(context)

    def body() -> SkipReason:
        alert = rules.run_failure_alert(
            job_name=run.job_name,
            run_id=run.run_id,
            partition=_partition_of(run.tags),
            message=message,
            settings=kit.settings,
        )
        report = _open_and_deliver(alert, kit)
        return SkipReason(f"{alert.dedup_key}: {report.summary()}")

    return _guarded("run_failure_alerts", kit, body)  # type: ignore[return-value]


def _run_success_tick(context: RunStatusSensorContext, kit: SensorKit) -> SkipReason | None:
    run = context.dagster_run
    keys = rules.run_success_resolve_keys(run.job_name, _partition_of(run.tags))
    outbox = kit.outbox()
    now = _now()
    resolved = outbox.resolve(keys, now=now)
    if not resolved:
        return SkipReason(f"no open failure alert for {run.job_name} {_partition_of(run.tags)}")
    report = TickReport(delivery=outbox.deliver_pending(kit.channels, now=now))
    return SkipReason(f"resolved {', '.join(resolved)}: {report.summary()}")


def _evaluation_sensors(interval: int) -> list[SensorDefinition]:
    """The sensors driven by materializations of the status assets."""
    return [
        _evaluation_sensor(
            "budget_alerts",
            "Budget thresholds crossed, forecast overruns, credit pool depletion and "
            "provider caps → PagerDuty / Slack (see docs/runbook.md).",
            BUDGETS,
            BUDGET_ASSETS,
            interval,
        ),
        _evaluation_sensor(
            "reconciliation_alerts",
            "Reconciliation breaks over tolerance and spend anomalies → PagerDuty / Slack.",
            BREAKS,
            BREAK_ASSETS,
            interval,
        ),
    ]


def make_sensors(settings: UsageSettings) -> list:
    stale_data_alerts = _alert_sensor(
        _running_sensor(
            "stale_data_alerts",
            settings.alerts.freshness_interval_s,
            "Yesterday's partition missing after the deadline; License Manager sync "
            "failures reported by the ledger.",
        ),
        _stale_data_tick,
    )
    alert_delivery = _alert_sensor(
        _running_sensor(
            "alert_delivery",
            30,
            "Retries pending alert deliveries (PagerDuty / Slack 429 and 5xx) with backoff.",
        ),
        _delivery_tick,
    )
    run_failure_alerts = _alert_sensor(
        _running_sensor(
            "run_failure_alerts",
            30,
            "Pages for failed runs, except runs about to be retried (dagster/will_retry).",
            run_failure_sensor,
        ),
        _run_failure_tick,
    )
    run_success_resolves = _alert_sensor(
        _running_sensor(
            "run_success_resolves",
            30,
            "Resolves the run_failure alert of a job and partition once a run of the same job "
            "succeeds for that partition or for a range that contains it.",
            run_status_sensor,
            run_status=DagsterRunStatus.SUCCESS,
        ),
        _run_success_tick,
    )
    return [
        *_evaluation_sensors(settings.alerts.sensor_interval_s),
        stale_data_alerts,
        alert_delivery,
        run_failure_alerts,
        run_success_resolves,
    ]


def _failure_message(context: RunFailureSensorContext) -> str:
    """The run's failure plus the root cause of each failed step (what on-call needs first)."""
    parts = [context.failure_event.message or "run failed"]
    try:
        step_events = context.get_step_failure_events()
    except Exception:  # the summary still pages without step details
        step_events = []
    for event in step_events[:3]:
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            parts.append(f"{event.step_key}: {error.message.strip()}")
    return " | ".join(parts)


def _partition_of(tags: dict[str, str]) -> str | None:
    if tags.get("dagster/partition"):
        return tags["dagster/partition"]
    if tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        return f"{tags[RANGE_START_TAG]}...{tags[RANGE_END_TAG]}"
    return None


def _secret(name: str) -> str | EnvVar:
    """An ``EnvVar`` when the variable is set, so its value never lands in the definitions."""
    return EnvVar(name) if os.environ.get(name) else ""


def definitions(settings: UsageSettings) -> Definitions:
    return Definitions(
        sensors=make_sensors(settings),
        resources={
            "alert_channels": AlertChannelsResource(
                pagerduty_routing_key=_secret("PAGERDUTY_ROUTING_KEY"),
                slack_webhook_url=_secret("SLACK_WEBHOOK_URL"),
                ledger_api_token=_secret("LEDGER_API_TOKEN"),
            )
        },
    )
