"""Alert routing and delivery settings.

No secrets here: the PagerDuty routing key comes from ``PAGERDUTY_ROUTING_KEY`` and the Slack
incoming-webhook URL (which embeds its token) from ``SLACK_WEBHOOK_URL``, both through Dagster
``EnvVar`` in ``defs/alerts.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from usage_orchestration.settings.fields import Seconds
from usage_orchestration.settings.urls import HttpUrl

Severity = Literal["critical", "error", "warning", "info"]
Channel = Literal["pagerduty", "slack", "none"]

SEVERITIES: tuple[Severity, ...] = ("critical", "error", "warning", "info")

# Every alert kind (``alerts.model.AlertKind`` holds the same names; a test keeps them equal):
# a silence or a command naming anything else is refused, not silently matching nothing.
ALERT_KINDS: tuple[str, ...] = (
    "budget_threshold",
    "forecast_overrun",
    "credit_pool_depletion",
    "provider_cap",
    "reconciliation_break",
    "anomaly",
    "run_failure",
    "stuck_run",
    "stale_data",
    "ledger_sync",
    "sensor_failure",
)


def _sensor_interval(default: int, sensor: str, at_least: int = 5) -> Any:
    """The field of a sensor's minimum interval in seconds (``Any``, as ``Field`` is typed)."""
    return Field(default, ge=at_least, description=f"minimum interval of the {sensor}")


def check_kind(kind: str) -> str:
    if kind not in ALERT_KINDS:
        raise ValueError(f"unknown alert kind {kind!r}; known kinds: {', '.join(ALERT_KINDS)}")
    return kind


class SilenceRule(BaseModel):
    """A time-bounded silence: alerts matching ``kind`` and/or ``subject`` (``*`` suffix matches
    a prefix) are recorded but not sent while ``starts_at <= now < ends_at``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: str | None = None
    subject: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime
    reason: str = ""

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str | None) -> str | None:
        return check_kind(v) if v else v

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v

    @model_validator(mode="after")
    def _scoped(self) -> SilenceRule:
        if not self.kind and not self.subject:
            raise ValueError(
                "a silence needs a kind or a subject (silencing everything is not allowed)"
            )
        if self.starts_at is not None and self.starts_at >= self.ends_at:
            raise ValueError("silence starts_at must be before ends_at")
        return self


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    pagerduty_events_url: HttpUrl = Field(
        "http://127.0.0.1:8765/pagerduty/v2/enqueue",
        description="real: https://events.pagerduty.com/v2/enqueue",
    )
    dagster_ui_url: HttpUrl = Field("http://127.0.0.1:3000", description="base of links in alerts")
    runbook_url: HttpUrl | None = Field(
        None,
        description="where docs/runbook.md is published (e.g. its page in the repository's web "
        "UI); every page links <runbook_url>#<kind>. Unset: pages name the file and anchor",
    )
    owner: str = Field(
        "team:finops",
        # Dagster's owner forms: an email or team:<name>; it is also every asset's owner
        pattern=r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$",
        description="who answers for these alerts and owns the assets in the catalog: an email "
        "or team:<name> (named in every page; the assets' owners)",
    )
    page_recent_days: int = Field(
        3,
        ge=0,
        description="periods that ended more than this many days ago are recorded, not sent",
    )
    timeout_s: Seconds = 10.0
    routing: dict[Severity, Channel] = Field(
        default_factory=lambda: {
            "critical": "pagerduty",
            "error": "pagerduty",
            "warning": "slack",
            "info": "slack",
        },
        description="Which channel each severity goes to (pagerduty, slack or none).",
    )
    source: str = Field("usage_orchestration", description="PagerDuty payload.source")
    silences: list[SilenceRule] = Field(
        default_factory=list, description="Silences from configuration (the CLI adds more)."
    )
    stale_deadline_utc: time = Field(
        time(9, 0), description="yesterday's partition must be present by this time of day (UTC)"
    )
    retry_base_s: Seconds = Field(30.0, description="first retry delay after 429/5xx")
    retry_max_s: Seconds = Field(900.0, description="cap of the exponential retry delay")
    delivery_lease_s: Seconds = Field(
        120.0, description="a delivery claimed by a tick is not retried by another before this"
    )
    reconciliation_page_credits: Decimal = Field(
        Decimal(0),
        ge=0,
        description="breaks whose |delta_credits| reach this are severity error (paged); others warning",
    )
    sensor_interval_s: int = _sensor_interval(60, "alert sensors")
    freshness_interval_s: int = _sensor_interval(300, "stale-data sensor", at_least=30)
    connect_timeout_s: Seconds = Field(
        3.0, description="connect timeout of a delivery (the read timeout is timeout_s)"
    )
    delivery_budget_s: Seconds = Field(
        20.0,
        le=45,
        description="time a delivery pass may spend sending; what is left stays pending for the "
        "next pass (keeps every pass well inside Dagster's 60 s limits)",
    )
    ledger_probe_timeout_s: Seconds = Field(
        5.0,
        le=20,
        description="the stale-data sensor's License Manager sync probe over the ledger's HTTP "
        "API: one attempt with this timeout (a slow ledger is reported, not waited for, so the "
        "tick stays well inside Dagster's 60 s)",
    )
    delivery_interval_s: int = _sensor_interval(15, "alert_delivery sensor")
    stuck_run_interval_s: int = _sensor_interval(60, "stuck_run_detector sensor")
    stuck_run_grace_s: int = Field(
        30,
        ge=5,
        description="a STARTED run whose worker is gone is marked failed only once it is this "
        "old (a run that has just started may not have its worker's pid yet)",
    )
    detect_dead_local_runs: bool = Field(
        True,
        description="stuck_run_detector marks a STARTED run failed when its run worker's pid is "
        "gone from this host; turn off where run workers live on other hosts (Celery, "
        "Kubernetes), which run monitoring's max_runtime covers instead",
    )

    @field_validator("routing")
    @classmethod
    def _all_severities(cls, v: dict[str, str]) -> dict[str, str]:
        missing = [s for s in SEVERITIES if s not in v]
        if missing:
            raise ValueError(f"routing has no channel for severity {', '.join(missing)}")
        return v
