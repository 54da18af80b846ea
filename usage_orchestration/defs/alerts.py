"""Alert sensors: thin wiring of ``usage_orchestration.alerts`` (rules, outbox, channels).

* ``budget_alerts``: budget thresholds, forecast overruns, credit pool depletion, provider caps;
* ``reconciliation_alerts``: reconciliation breaks over tolerance, spend anomalies;
* ``stale_data_alerts``: yesterday's partition missing by the deadline, ledger sync failures;
* ``run_failure_alerts`` / ``run_success_resolves``: failed (or stuck) runs of every code
  location, keyed by job, failed assets and days; resolved by a later success that
  materialized those assets for those days;
* ``stuck_run_detector``: a STARTED run whose run worker process is gone is marked failed (its
  concurrency slots are then freed by run monitoring) and so pages as ``stuck_run``;
* ``alert_delivery``: requests a ``deliver_alerts`` run when something is due.

Sensors only **record** alerts in the outbox; sending happens in the ``deliver_alerts`` run that
a committed ``alert_delivery`` tick requests. "Preview tick result" in the UI therefore sends
nothing (a preview never launches runs). Each evaluation sensor keeps a JSON cursor of the
latest materialization it has seen and re-evaluates when one changes (or every
``REEVALUATE_S``). A sensor that fails records a ``sensor_failure`` alert (sent directly only
when the outbox itself is unreachable), then fails its tick; its next good tick resolves it.
"""

import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import dagster as dg

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
    close_channels,
    deliver,
    evaluate_and_record,
)
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.settings import UsageSettings
from usage_orchestration.settings.secrets import redact, secret_values

REEVALUATE_S = 600
WILL_RETRY_TAG = "dagster/will_retry"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
DELIVERY_JOB = "deliver_alerts"
RUN_KINDS = (AlertKind.RUN_FAILURE.value, AlertKind.STUCK_RUN.value)
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


class AlertChannelsResource(dg.ConfigurableResource):
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


def _latest_ids(instance: dg.DagsterInstance, assets: Sequence[str]) -> dict[str, int]:
    """The storage id of each watched asset's latest materialization (a new partition or a
    re-materialization changes it)."""
    out: dict[str, int] = {}
    for a in assets:
        records = instance.fetch_materializations(dg.AssetKey(a), limit=1).records
        if records:
            out[a] = records[0].storage_id
    return out


def _sensor_failure_key(name: str) -> str:
    return dedup_key(AlertKind.SENSOR_FAILURE.value, f"sensor/{name}", "")


class SensorKit:
    """What every alert sensor is handed: the settings, the warehouse (its engine is cached per
    URL), the delivery channels (built on first use, closed after the tick) and the ledger's
    API token."""

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

    def close(self) -> None:
        if "channels" in self.__dict__:
            close_channels(self.__dict__.pop("channels"))


def _report_sensor_failure(name: str, exc: Exception, kit: SensorKit) -> None:
    """Record a sensor_failure alert (the delivery run sends it); if even the outbox is
    unreachable, send it directly — the one send outside a delivery run, because nothing else
    could (the receiver collapses repeats on the dedup key)."""
    alert = rules.sensor_failure_alert(
        name, _redacted(f"{type(exc).__name__}: {exc}", kit.settings), kit.settings
    )
    try:
        kit.outbox().open([alert], now=_now())
    except Exception:
        channel = kit.channels.get(kit.settings.alerts.routing[alert.severity])
        if channel is not None:
            channel.send(Notification.trigger_of(alert), timeout_s=kit.settings.alerts.timeout_s)


def _redacted(text: str, settings: UsageSettings) -> str:
    """Every secret the README lists (in the forms it travels in) and the database passwords of
    the settings' URLs masked out of an error message before it becomes an alert."""
    from sqlalchemy.engine import make_url

    passwords: list[str] = []
    for url in (settings.warehouse_url, settings.ledger.database_url):
        try:
            passwords.append(make_url(url).password or "")
        except Exception:  # an unparsable URL: nothing to mask from it
            continue
    return redact(text, [*secret_values(), *(p for p in passwords if p)])


def _guarded(name: str, kit: SensorKit, body: Callable[[], Any]) -> Any:
    try:
        result = body()
    except Exception as exc:
        _report_sensor_failure(name, exc, kit)
        raise
    kit.outbox().resolve([_sensor_failure_key(name)], now=_now())
    return result


def _evaluation_tick(
    context: dg.SensorEvaluationContext,
    evaluation: Evaluation,
    watched: Sequence[str],
    kit: SensorKit,
    extra: Callable[[], tuple[list, list[AlertKind]]] | None = None,
    always: bool = False,
) -> dg.SensorResult:
    """Record a full evaluation when a watched asset changed (or it is due); send nothing."""
    now = _now()
    cursor = _load_cursor(context.cursor)
    seen = _latest_ids(context.instance, watched)
    last = cursor.get("evaluated_at")
    stale = last is None or now - datetime.fromisoformat(str(last)) >= timedelta(
        seconds=REEVALUATE_S
    )
    if always or seen != cursor.get("seen") or stale:
        alerts, kinds = extra() if extra else ([], [])
        report = evaluate_and_record(
            evaluation, kit.warehouse.get().engine, kit.settings, now, alerts, kinds
        )
        new_cursor = {"seen": seen, "evaluated_at": now.isoformat()}
        message = f"evaluated {evaluation.name}: " + report.summary()
    else:
        new_cursor = {**cursor, "seen": seen}
        message = "no new materializations"
    context.log.info(message)
    return dg.SensorResult(
        skip_reason=dg.SkipReason(message), cursor=json.dumps(new_cursor, sort_keys=True)
    )


# Asset keys whose materializations change what the rules see (budget_status also writes
# credit_pool_status; usage_anomalies writes the usage_anomaly table).
BUDGET_ASSETS = ("budget_status", "provider_cap_status")
BREAK_ASSETS = ("usage_reconciliation", "usage_anomalies")


def _alert_sensor(
    decorator: Callable[[Callable[..., Any]], Any], tick: Callable[[Any, SensorKit], Any]
) -> Any:
    """``tick`` as a sensor of ``decorator`` (sensor, run_failure_sensor, run_status_sensor),
    with the resources every alert sensor needs; the tick's HTTP clients are closed after it."""

    def alert_sensor(
        context: Any,
        settings: dg.ResourceParam[UsageSettings],
        warehouse: WarehouseResource,
        alert_channels: AlertChannelsResource,
    ) -> Any:
        kit = SensorKit(settings, warehouse, alert_channels)
        try:
            return tick(context, kit)
        finally:
            kit.close()

    return decorator(alert_sensor)


def _running_sensor(
    name: str,
    interval: int,
    description: str,
    decorator: Callable[..., Any] = dg.sensor,
    **extra: Any,
) -> Callable[..., Any]:
    """``decorator``'s arguments for an alert sensor: on from the start, at ``interval``."""
    return decorator(
        name=name,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
        **extra,
    )


def _evaluation_sensor(
    name: str, description: str, evaluation: Evaluation, watched: Sequence[str], interval: int
) -> dg.SensorDefinition:
    """A sensor that re-evaluates ``evaluation``'s rules when ``watched`` assets materialize."""

    def tick(
        context: dg.SensorEvaluationContext, kit: SensorKit
    ) -> dg.SensorResult | dg.SkipReason:
        return _guarded(name, kit, lambda: _evaluation_tick(context, evaluation, watched, kit))

    return _alert_sensor(_running_sensor(name, interval, description), tick)


def _ledger_sync_alerts(
    settings: UsageSettings, ledger_api_token: str | None
) -> tuple[list[Alert], list[AlertKind]]:
    """The ledger's License Manager sync status as alerts (a ledger it cannot reach is one)."""
    from usage_orchestration.ledger.factory import make_ledger_reader

    reader = None
    # a probe: one short attempt (the assets' reader retries and waits; a tick cannot)
    ledger = settings.ledger
    if ledger.backend == "http":
        ledger = ledger.model_copy(
            update={
                "timeout_s": min(ledger.timeout_s, settings.alerts.ledger_probe_timeout_s),
                "max_attempts": 1,
            }
        )
    try:
        reader = make_ledger_reader(ledger, ledger_api_token)
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


def _stale_data_tick(
    context: dg.SensorEvaluationContext, kit: SensorKit
) -> dg.SensorResult | dg.SkipReason:
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


# -- delivery: a run, so that only committed ticks send ------------------------------------------
@dg.op(description="One delivery pass of the alert outbox within alerts.delivery_budget_s.")
def deliver_alerts_op(
    context: dg.OpExecutionContext,
    settings: dg.ResourceParam[UsageSettings],
    warehouse: WarehouseResource,
    alert_channels: AlertChannelsResource,
) -> None:
    channels = alert_channels.channels(settings)
    try:
        report = deliver(warehouse.get().engine, settings.alerts, channels, _now())
    finally:
        close_channels(channels)
    context.log.info(report.summary())


@dg.job(
    name=DELIVERY_JOB,
    executor_def=dg.in_process_executor,
    description="Sends what the alert outbox has due (PagerDuty / Slack); requested by the "
    "alert_delivery sensor.",
    tags={"dagster/priority": "10", "usage/role": "alert-delivery"},
)
def deliver_alerts_job() -> None:
    deliver_alerts_op()


def _delivery_in_flight(instance: dg.DagsterInstance) -> bool:
    runs = instance.get_run_records(
        filters=dg.RunsFilter(job_name=DELIVERY_JOB, statuses=IN_FLIGHT), limit=1
    )
    return bool(runs)


def _delivery_tick(
    context: dg.SensorEvaluationContext, kit: SensorKit
) -> dg.SensorResult | dg.SkipReason:
    def body() -> dg.SensorResult | dg.SkipReason:
        now = _now()
        due = kit.outbox().due_count(now)
        if not due:
            return dg.SkipReason("nothing due")
        if _delivery_in_flight(context.instance):
            return dg.SkipReason(f"{due} due; a {DELIVERY_JOB} run is already queued or running")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"deliver-{now.isoformat()}")],
            cursor=json.dumps({"requested_at": now.isoformat(), "due": due}),
        )

    return _guarded("alert_delivery", kit, body)


# -- run failures and successes, of every code location -----------------------------------------
def _events(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> list[Any]:
    records = instance.get_records_for_run(run_id, of_type=kind).records
    return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event]


def _failed_steps(instance: dg.DagsterInstance, run_id: str) -> tuple[set[str], bool]:
    """The steps that failed, or — when none reported failing — those that started and never
    finished (the run worker died: stuck); and whether it is the latter."""
    failed = {e.step_key for e in _events(instance, run_id, dg.DagsterEventType.STEP_FAILURE)}
    if failed:
        return failed, False
    started = {e.step_key for e in _events(instance, run_id, dg.DagsterEventType.STEP_START)}
    finished = {e.step_key for e in _events(instance, run_id, dg.DagsterEventType.STEP_SUCCESS)}
    return started - finished, bool(started - finished)


def _failed_assets(instance: dg.DagsterInstance, run_id: str) -> tuple[list[str], bool]:
    """Asset keys of the failed (or interrupted) steps; empty for an op job."""
    steps, stuck = _failed_steps(instance, run_id)
    planned = _events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    assets = {e.asset_key.to_user_string() for e in planned if e.step_key in steps and e.asset_key}
    return sorted(assets), stuck


# Run-status ticks log and return None: a returned SkipReason ends Dagster's run-status tick
# after the first run, so a burst of failures would take one tick (30 s) per run; None lets a
# tick handle up to DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT (5) runs.
def _run_failure_tick(context: dg.RunFailureSensorContext, kit: SensorKit) -> None:
    run = context.dagster_run
    if run.tags.get(WILL_RETRY_TAG) == "true":
        context.log.info(f"run {run.run_id} will be retried: no alert")
        return

    def body() -> None:
        assets, stuck = _failed_assets(context.instance, run.run_id)
        alert = rules.run_failure_alert(
            job_name=run.job_name,
            run_id=run.run_id,
            partition=_partition_of(run.tags),
            message=_redacted(_failure_message(context), kit.settings),
            settings=kit.settings,
            assets=assets,
            failed_at=_ended_at(context.instance, run.run_id),
            stuck=stuck,
        )
        report = kit.outbox().open([alert], now=_now())
        context.log.info(f"{alert.dedup_key}: {TickReport(sync=report).summary()}")

    _guarded("run_failure_alerts", kit, body)


def _ended_at(instance: dg.DagsterInstance, run_id: str) -> datetime:
    """When the run ended (failure or success): what "a later success" is measured by."""
    record = instance.get_run_record_by_id(run_id)
    ended = record.end_time if record is not None else None
    return datetime.fromtimestamp(ended, UTC) if ended else _now()


def _materialized(instance: dg.DagsterInstance, run_id: str) -> set[tuple[str, str | None]]:
    events = _events(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    return {(e.asset_key.to_user_string(), e.partition) for e in events if e.asset_key}


def _run_success_tick(context: dg.RunStatusSensorContext, kit: SensorKit) -> None:
    run = context.dagster_run
    succeeded_at = _ended_at(context.instance, run.run_id)
    materialized = _materialized(context.instance, run.run_id)
    outbox = kit.outbox()
    keys = [
        a["dedup_key"]
        for a in outbox.open_alerts(RUN_KINDS)
        if rules.failure_resolved_by(
            a["details"],
            job_name=run.job_name,
            partition=_partition_of(run.tags),
            materialized=materialized,
            succeeded_at=succeeded_at,
        )
    ]
    resolved = outbox.resolve(keys, now=_now())
    context.log.info(
        f"resolved {', '.join(resolved)}"
        if resolved
        else f"run {run.run_id} clears no open failure alert"
    )


# -- runs whose worker died without reporting ---------------------------------------------------
def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from the engine event "Started process for run (pid: N)"."""
    for event in reversed(_events(instance, run_id, dg.DagsterEventType.ENGINE_EVENT)):
        data = getattr(event, "engine_event_data", None)
        pid = (data.metadata or {}).get("pid") if data is not None else None
        if pid is not None and "Started process for run" in (event.message or ""):
            return int(getattr(pid, "value", pid))
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _dead_runs(instance: dg.DagsterInstance, grace_s: float) -> list[dg.DagsterRun]:
    """STARTED runs older than ``grace_s`` whose local run worker process is gone (killed by
    the OS, out of memory). Runs on other hosts (no local pid) are left to max_runtime."""
    cutoff = _now() - timedelta(seconds=grace_s)
    out = []
    for record in instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=200
    ):
        if record.start_time and datetime.fromtimestamp(record.start_time, UTC) > cutoff:
            continue
        pid = _worker_pid(instance, record.dagster_run.run_id)
        if pid is not None and not _pid_alive(pid):
            out.append(record.dagster_run)
    return out


def _stuck_run_tick(context: dg.SensorEvaluationContext, kit: SensorKit) -> dg.SkipReason:
    def body() -> dg.SkipReason:
        if not kit.settings.alerts.detect_dead_local_runs:
            return dg.SkipReason(
                "alerts.detect_dead_local_runs is off (run workers on other hosts)"
            )
        dead = _dead_runs(context.instance, grace_s=kit.settings.alerts.stuck_run_grace_s)
        for run in dead:
            # Marking it failed ends it: run_failure_alerts pages (stuck_run) and run monitoring
            # frees its concurrency slots after free_slots_after_run_end_seconds.
            context.instance.report_run_failed(
                run, "run worker process is gone (killed or out of memory); marked failed"
            )
        return dg.SkipReason(
            f"marked failed: {', '.join(r.run_id for r in dead)}" if dead else "no dead runs"
        )

    return _guarded("stuck_run_detector", kit, body)


def _evaluation_sensors(interval: int) -> list[dg.SensorDefinition]:
    """The sensors driven by materializations of the status assets."""
    return [
        _evaluation_sensor(
            "budget_alerts",
            "Budget thresholds crossed, forecast overruns, credit pool depletion and "
            "provider caps → the alert outbox (see docs/runbook.md).",
            BUDGETS,
            BUDGET_ASSETS,
            interval,
        ),
        _evaluation_sensor(
            "reconciliation_alerts",
            "Reconciliation breaks over tolerance and spend anomalies → the alert outbox.",
            BREAKS,
            BREAK_ASSETS,
            interval,
        ),
    ]


def _run_sensors(settings: UsageSettings) -> list[dg.SensorDefinition]:
    """Run failures and successes of every run of the deployment, however launched."""
    return [
        _alert_sensor(
            _running_sensor(
                "run_failure_alerts",
                30,
                "Pages for failed or stuck runs of every code location, except runs about "
                "to be retried (dagster/will_retry).",
                dg.run_failure_sensor,
                monitor_all_code_locations=True,
            ),
            _run_failure_tick,
        ),
        _alert_sensor(
            _running_sensor(
                "run_success_resolves",
                30,
                "Resolves run_failure / stuck_run alerts once a later run materialized the "
                "failed assets for the failed days (any job, any code location).",
                dg.run_status_sensor,
                run_status=dg.DagsterRunStatus.SUCCESS,
                monitor_all_code_locations=True,
            ),
            _run_success_tick,
        ),
        _alert_sensor(
            _running_sensor(
                "stuck_run_detector",
                settings.alerts.stuck_run_interval_s,
                "Marks STARTED runs whose run worker process is gone as failed (they then "
                "page as stuck_run and their pool slots are freed).",
            ),
            _stuck_run_tick,
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
            settings.alerts.delivery_interval_s,
            "Requests a deliver_alerts run when alerts are due (new, resolved, or retries of "
            "429/5xx after their backoff).",
            job=deliver_alerts_job,
        ),
        _delivery_tick,
    )
    return [
        *_evaluation_sensors(settings.alerts.sensor_interval_s),
        stale_data_alerts,
        alert_delivery,
        *_run_sensors(settings),
    ]


def _failure_message(context: dg.RunFailureSensorContext) -> str:
    """The root cause of each failed step first (what on-call needs, and what survives a cut),
    then the run's own failure message."""
    parts: list[str] = []
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
    parts.append((context.failure_event.message or "run failed").strip())
    return " | ".join(parts)


def _partition_of(tags: dict[str, str]) -> str | None:
    if tags.get("dagster/partition"):
        return tags["dagster/partition"]
    if tags.get(RANGE_START_TAG) and tags.get(RANGE_END_TAG):
        return f"{tags[RANGE_START_TAG]}...{tags[RANGE_END_TAG]}"
    return None


def _secret(name: str) -> str | dg.EnvVar:
    """An ``EnvVar`` when the variable is set, so its value never lands in the definitions."""
    return dg.EnvVar(name) if os.environ.get(name) else ""


def definitions(settings: UsageSettings) -> dg.Definitions:
    return dg.Definitions(
        jobs=[deliver_alerts_job],
        sensors=make_sensors(settings),
        resources={
            "alert_channels": AlertChannelsResource(
                pagerduty_routing_key=_secret("PAGERDUTY_ROUTING_KEY"),
                slack_webhook_url=_secret("SLACK_WEBHOOK_URL"),
                ledger_api_token=_secret("LEDGER_API_TOKEN"),
            )
        },
    )
