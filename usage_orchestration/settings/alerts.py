"""Alert routing and delivery settings (no secrets: PAGERDUTY_ROUTING_KEY, SLACK_WEBHOOK_URL)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pagerduty_events_url: str = Field(
        "http://127.0.0.1:8765/pagerduty/v2/enqueue",
        description="real: https://events.pagerduty.com/v2/enqueue",
    )
    dagster_ui_url: str = Field("http://127.0.0.1:3000", description="base of links in alerts")
    page_recent_days: int = Field(
        3, ge=0, description="periods older than this many days are recorded, not paged"
    )
    timeout_s: float = Field(10.0, gt=0)
