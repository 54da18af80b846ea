"""Atlassian Forge settings (no secrets: FORGE_EMAIL and FORGE_API_TOKEN come from the environment)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping


class ForgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    base_url: str = Field("http://127.0.0.1:8765/forge/graphql", description="real: https://api.atlassian.com/graphql")


# Demo defaults (the sandbox's data set), merged into the settings defaults by defaults.py.
DEFAULT_MAPPINGS: list[UsageMapping] = []
DEFAULT_RATE_CARD: dict[str, RateCardEntry] = {}
