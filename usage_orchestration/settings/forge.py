"""Atlassian Forge settings (no secrets: FORGE_EMAIL and FORGE_API_TOKEN come from the environment).

The app resource usage API (GraphQL Gateway) allows 5 requests a minute per account; every
process that uses the same ``account_id`` shares one request budget (under ``state_dir``, or in
the warehouse: ``request_budget.backend``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from usage_orchestration.settings.demo import demo_mappings, demo_rate
from usage_orchestration.settings.fields import Attempts, Count, Seconds, SecondsOrZero
from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping
from usage_orchestration.settings.urls import HttpUrl

GroupBy = Literal["CONTEXT_ARI", "ENVIRONMENT_ID"]

# The sandbox's demo app (an app ARI, as the developer console shows it).
DEMO_APP_ID = "ari:cloud:ecosystem::app/6e0d7c55-0f3e-4a4b-9d7a-5c1f0b9e2d11"
DEMO_APP_NAME = "Jira Insights"
JIRA_INSIGHTS = "dddddddd-dddd-dddd-dddd-dddddddddddd"
DEMO_ACCOUNT_ID = "forge-developer-1"  # the sandbox's account
# The X-ExperimentalAPI value the demo sends because the real one is not published (set what
# Atlassian tells you); the production profile refuses it.
PLACEHOLDER_EXPERIMENTAL_API = "DevConsoleAppResourceUsage"


class ForgeApp(BaseModel):
    """One Forge app and what to export for it (one request series per app and resource)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    app_id: str = Field(min_length=1, description="the app id (ARI) from the developer console")
    name: str | None = Field(None, description="shown as resource_name")
    resources: list[str] = Field(
        default_factory=lambda: ["FUNCTION_COMPUTE"],
        min_length=1,
        description="usage keys (filters.resource), one per request; unknown names are accepted",
    )
    context_aris: list[str] = Field(
        default_factory=list, description="filters.contextAris (sites); empty = all sites"
    )
    group_by: GroupBy | None = Field(
        None,
        description="CONTEXT_ARI, ENVIRONMENT_ID or null (flat). With context_aris and no "
        "group_by the API groups by CONTEXT_ARI by itself.",
    )

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: list[str]) -> list[str]:
        for i, r in enumerate(v):
            if not r.strip():
                raise ValueError(f"resources[{i}] is empty")
        if len(set(v)) != len(v):
            raise ValueError("resources holds duplicates")
        return v


class ForgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    base_url: HttpUrl = Field(
        "http://127.0.0.1:8765/forge/graphql", description="real: https://api.atlassian.com/graphql"
    )
    experimental_api: str = Field(
        PLACEHOLDER_EXPERIMENTAL_API,
        min_length=1,
        description="value of the X-ExperimentalAPI header (the API is experimental; the value "
        "is not published: set what Atlassian tells you)",
    )
    user_agent: str = Field("ForgeMetricsExportServer/1.0.0", min_length=1)
    account_id: str = Field(
        DEMO_ACCOUNT_ID,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="names the Atlassian account (owner of the apps and of the API token): "
        "billing_account_id of the rows and the key of the shared request budget",
    )
    apps: list[ForgeApp] = Field(
        default_factory=lambda: [
            ForgeApp(app_id=DEMO_APP_ID, name=DEMO_APP_NAME, group_by="ENVIRONMENT_ID")
        ]
    )
    max_pages: Count = Field(100, description="page cap per (app, resource, window)")
    lookback_days: Count | None = Field(
        60,
        description="the API covers the last N days; older days are recorded as unavailable "
        "(never as zero usage) and not requested. null = no limit.",
    )
    rate_limit_max_requests: Count = Field(5, description="documented: 5 requests ...")
    rate_limit_per_seconds: Seconds = Field(60.0, description="... per 60 seconds")
    rate_limit_margin_s: SecondsOrZero = Field(
        1.0,
        description="added to the budget window so that request arrival jitter never trips "
        "the provider's own window",
    )
    timeout_s: Seconds = 30.0
    max_attempts: Attempts = 5
    retry_after_cap_s: SecondsOrZero = 90.0

    @model_validator(mode="after")
    def _unique_apps(self) -> ForgeSettings:
        ids = [a.app_id for a in self.apps]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"apps holds duplicate app_id(s): {dup}")
        return self


# Demo defaults (the sandbox's data set), merged into the settings defaults by defaults.py.
DEFAULT_MAPPINGS: list[UsageMapping] = demo_mappings(
    "forge", "app", {DEMO_APP_ID: JIRA_INSIGHTS}, {"FUNCTION_COMPUTE": "app_compute"}
)
# Functions run at 1 GB in the demo, so one GB-second is one second of app compute. The Phala
# part defines app_compute itself (ledger unit, credits, tolerance); defaults.py merges this
# conversion into it.
DEFAULT_RATE_CARD: dict[str, RateCardEntry] = {
    "app_compute": demo_rate("second", "GB-seconds", "0.01"),
}
