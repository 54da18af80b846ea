"""Neon settings (no secrets: the API key comes from NEON_API_KEY)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping


class NeonSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    base_url: str = Field("http://127.0.0.1:8765/neon", description="real: https://console.neon.tech")
    org_id: str = Field("org-sandbox-1", pattern=r"^[a-z0-9-]{1,60}$")


# Demo defaults (the sandbox's data set), merged into the settings defaults by defaults.py.
DEFAULT_MAPPINGS: list[UsageMapping] = []
DEFAULT_RATE_CARD: dict[str, RateCardEntry] = {}
