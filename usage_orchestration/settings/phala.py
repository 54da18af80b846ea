"""Phala Cloud settings (no secrets: the API key comes from PHALA_API_KEY)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from usage_orchestration.settings.fields import Attempts, Count, Seconds, SecondsOrZero
from usage_orchestration.settings.urls import HttpUrl

_APP_ID = re.compile(r"^[0-9a-f]{40}$")

# The sandbox's apps (defaults.py maps them to the demo ledger's apps).
DEMO_APP_IDS: tuple[str, ...] = (
    "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
    "0fedcba9876543210fedcba9876543210fedcba9",
)


class PhalaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    base_url: HttpUrl = Field(
        "http://127.0.0.1:8765/phala", description="real: https://cloud-api.phala.com"
    )
    api_version: str = Field("2026-01-21", description="X-Phala-Version, pinned")
    app_ids: list[str] = Field(
        default_factory=lambda: list(DEMO_APP_IDS),
        description="Hex app ids (40 hex characters, without the CLI's app_ prefix).",
    )
    # the API maximum: a year of hourly records is ~31,000 per app, and the server rebuilds the
    # whole window for every page, so fewer, larger pages cost it (and the range) far less
    page_size: Count = Field(5000, le=5000, description="limit per request (API max 5000)")
    max_pages: Count = Field(1000, description="guard against endless paging per window")
    timeout_s: Seconds = 30.0
    max_attempts: Attempts = 5
    retry_after_cap_s: SecondsOrZero = 60.0

    @field_validator("app_ids")
    @classmethod
    def _hex_ids(cls, ids: list[str]) -> list[str]:
        for i, app_id in enumerate(ids):
            if app_id.startswith("app_"):
                raise ValueError(f"app_ids[{i}] {app_id!r}: drop the 'app_' prefix")
            if not _APP_ID.match(app_id):
                raise ValueError(f"app_ids[{i}] {app_id!r} is not 40 lowercase hex characters")
        if len(set(ids)) != len(ids):
            raise ValueError("app_ids holds duplicates")
        return ids
