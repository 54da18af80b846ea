"""The alert: kind, severity, subject, period, threshold, and its deterministic dedup key."""

from __future__ import annotations

import calendar
import hashlib
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from usage_orchestration.settings.alerts import Severity


class AlertKind(StrEnum):
    BUDGET_THRESHOLD = "budget_threshold"
    FORECAST_OVERRUN = "forecast_overrun"
    CREDIT_POOL_DEPLETION = "credit_pool_depletion"
    PROVIDER_CAP = "provider_cap"
    RECONCILIATION_BREAK = "reconciliation_break"
    ANOMALY = "anomaly"
    RUN_FAILURE = "run_failure"
    STUCK_RUN = "stuck_run"
    STALE_DATA = "stale_data"
    LEDGER_SYNC = "ledger_sync"
    SENSOR_FAILURE = "sensor_failure"


# Escalation compares severities: a report of an open alert at a higher rank sends it again.
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}

DEDUP_PREFIX = "usage-orchestration"
MAX_DEDUP_KEY = 255  # PagerDuty's dedup_key limit


def dedup_key(kind: str, subject: str, period: str, threshold: str = "") -> str:
    """``usage-orchestration/<kind>/<subject>/<period>[/<threshold>]`` — the same inputs always give
    the same key, on every tick and in every process. Over 255 characters, the tail becomes a
    SHA-256 digest so the key stays unique and within PagerDuty's limit."""
    parts = [DEDUP_PREFIX, kind, subject, period] + ([threshold] if threshold else [])
    key = "/".join(parts)
    if len(key) <= MAX_DEDUP_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return key[: MAX_DEDUP_KEY - len(digest) - 1] + "#" + digest


def period_end(period: str) -> date | None:
    """The last day of a period string: ``YYYY-MM-DD`` (a day), ``YYYY-MM`` (a month),
    ``YYYY-MM-DD...YYYY-MM-DD`` (a range of days); None when the period is not a date, meaning
    'current'."""
    if "..." in period:
        period = period.rpartition("...")[2]
    try:
        if len(period) == 10:
            return date.fromisoformat(period)
        if len(period) == 7:
            y, m = int(period[:4]), int(period[5:7])
            return date(y, m, calendar.monthrange(y, m)[1])
    except ValueError:
        return None
    return None


def is_recent(period: str, now: datetime, recent_days: int) -> bool:
    """Whether an alert for ``period`` may page: its period ended at most ``recent_days`` days
    before today (UTC). Older periods (backfills of history) are recorded, not sent."""
    end = period_end(period)
    if end is None:
        return True
    today = now.astimezone(UTC).date()
    return end >= today - timedelta(days=recent_days)


class Alert(BaseModel):
    """A desired alert: what a rule says is wrong now."""

    model_config = ConfigDict(frozen=True)

    kind: AlertKind
    severity: Severity
    subject: str = Field(min_length=1)
    period: str = ""  # YYYY-MM-DD, YYYY-MM, or "" (no period)
    threshold: str = ""
    summary: str = Field(min_length=1)
    details: dict[str, Any] = Field(default_factory=dict)
    links: list[dict[str, str]] = Field(default_factory=list)
    # False: the condition holds in the data but its period is closed (a past month). Such an
    # alert is recorded (resolved) if new, and resolves if open; it never pages.
    active: bool = True

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.kind.value, self.subject, self.period, self.threshold)
