"""Neon settings (no secrets: the API key comes from NEON_API_KEY).

See docs/providers/neon.md for what each setting does and how to point at the real API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from usage_orchestration.settings.demo import demo_mappings, demo_rate
from usage_orchestration.settings.fields import Attempts, Count, Seconds, SecondsOrZero
from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping
from usage_orchestration.settings.urls import HttpUrl

NEON_METRICS: tuple[str, ...] = (
    "compute_unit_seconds",
    "root_branch_bytes_month",
    "child_branch_bytes_month",
    "instant_restore_bytes_month",
    "snapshot_storage_bytes_month",
    "public_network_transfer_bytes",
    "private_network_transfer_bytes",
    "extra_branches_month",
)

# The sandbox org's first projects (sandbox/neon.py serves them first, whatever the seed): the
# demo maps them to one ledger entity.
DEMO_PROJECTS: tuple[str, ...] = (
    "delicate-dawn-54854667",
    "quiet-snow-71788278",
    "cold-poetry-09157238",
)
ANALYTICS_WAREHOUSE = "cccccccc-cccc-cccc-cccc-cccccccccccc"
DEMO_ORG_ID = "org-sandbox-1"  # the sandbox's organization (the production profile refuses it)

# The API's id format (org_id's documented pattern; project ids follow it too: lower-case words
# and digits joined by hyphens). Anything else (a comma, a space, upper case) would silently
# split or change the project_ids filter sent to Neon.
NEON_ID_PATTERN = r"^[a-z0-9-]{1,60}$"
NEON_ID = re.compile(NEON_ID_PATTERN)


class NeonSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    base_url: HttpUrl = Field(
        "http://127.0.0.1:8765/neon", description="real: https://console.neon.tech"
    )
    org_id: str = Field(DEMO_ORG_ID, pattern=NEON_ID_PATTERN)
    project_ids: list[str] = Field(
        default_factory=list,
        description="Projects to fetch, sent as project_ids in chunks of at most 100; empty = "
        "every project of the organization, page by page (cursor).",
    )
    metrics: list[str] = Field(
        default_factory=lambda: list(NEON_METRICS),
        min_length=1,
        description="Consumption metrics requested (always sent).",
    )
    page_limit: Count = Field(100, le=100, description="projects per page (API max 100)")
    max_pages: Count = Field(1000, description="guard against endless paging per request window")
    rate_limit_requests: Count = Field(
        40,
        description="Client-side request budget per rate_limit_window_s, shared by every process "
        "(documented: about 50 requests/minute per account for all consumption endpoints).",
    )
    rate_limit_window_s: Seconds = Field(60.0, description="sliding window of the budget")
    daily_lookback_days: Count = Field(
        60, description="Neon keeps daily granularity this many days back from its clock"
    )
    monthly_lookback_days: Count = Field(
        365, description="Neon keeps monthly granularity about a year back"
    )
    window_margin_s: SecondsOrZero = Field(
        0.0,
        description="Seconds subtracted from the lookback to absorb clock skew with Neon: a day "
        "that close to the edge is recorded unavailable instead of risking a 406.",
    )
    outside_window: Literal["unavailable", "monthly"] = Field(
        "unavailable",
        description="Days outside the daily window: 'unavailable' (coverage row with the reason, "
        "no usage) or 'monthly' (months entirely outside the daily window are fetched at monthly "
        "granularity and the month's figure is recorded on the month's first day).",
    )
    timeout_s: Seconds = 30.0
    max_attempts: Attempts = 5
    retry_after_cap_s: SecondsOrZero = 60.0
    backoff_base_s: SecondsOrZero = Field(
        1.0, description="exponential backoff when no Retry-After"
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for i, m in enumerate(metrics):
            if m not in NEON_METRICS:
                raise ValueError(
                    f"metrics[{i}] {m!r} is not a Neon v2 metric (known: {', '.join(NEON_METRICS)})"
                )
        if len(set(metrics)) != len(metrics):
            raise ValueError("metrics holds duplicates")
        return metrics

    @field_validator("project_ids")
    @classmethod
    def _unique_projects(cls, ids: list[str]) -> list[str]:
        for i, pid in enumerate(ids):
            if not NEON_ID.fullmatch(pid):
                raise ValueError(
                    f"neon.project_ids[{i}] {pid!r} is not a Neon project id "
                    f"({NEON_ID_PATTERN}: lower-case letters, digits and hyphens; one id per "
                    "entry, no commas or spaces)"
                )
        if len(set(ids)) != len(ids):
            raise ValueError("project_ids holds duplicates")
        return ids

    @model_validator(mode="after")
    def _windows(self) -> NeonSettings:
        if self.monthly_lookback_days < self.daily_lookback_days:
            raise ValueError("monthly_lookback_days must not be shorter than daily_lookback_days")
        return self


def warehouse_mappings(
    projects: Iterable[str], resource_types: Mapping[str, str]
) -> list[UsageMapping]:
    """Each project's metrics (metric → resource type) charged to the analytics warehouse, as
    the demo maps Neon."""
    return demo_mappings(
        "neon", "workspace", dict.fromkeys(projects, ANALYTICS_WAREHOUSE), resource_types
    )


# Demo defaults (the sandbox's data set), merged into the settings defaults by defaults.py.
# Only compute and root-branch storage are mapped; the other metrics stay unmapped (reported as
# `unmapped`, never dropped).
DEFAULT_MAPPINGS: list[UsageMapping] = warehouse_mappings(
    DEMO_PROJECTS,
    {"compute_unit_seconds": "job_compute", "root_branch_bytes_month": "workspace_storage"},
)

DEFAULT_RATE_CARD: dict[str, RateCardEntry] = {
    # consumed unit CU-hour (compute_unit_seconds / 3600) → ledger seconds
    "job_compute": demo_rate("second", "CU-hour", "0.002", multiply=3600),
    # consumed unit GB-month (byte-hours / 744 / 1e9). A gauge: the day's average bytes are its
    # byte-hours / 24 = GB-month × 744e9 / 24.
    "workspace_storage": demo_rate(
        "byte", "GB-month", "0.000000001", multiply=744_000_000_000, divide=24
    ),
}
