"""The one typed, validated configuration of the project.

Read from a YAML file (``USAGE_SETTINGS_FILE``, else ``usage_orchestration.yaml`` in the working
directory when present) and from ``USAGE_``-prefixed environment variables (nested keys joined
with ``__``, e.g. ``USAGE_WAREHOUSE_URL`` or ``USAGE_PHALA__PAGE_SIZE``). Environment wins over
the file. Secrets are never read from here: they come from environment variables through
Dagster ``EnvVar`` (see ``defs/resources.py``). Defaults point at the loopback sandbox and
SQLite files under ``.data/``.
"""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from usage_orchestration.settings.alerts import AlertSettings
from usage_orchestration.settings.budgets import BudgetSettings
from usage_orchestration.settings.forge import ForgeSettings
from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping
from usage_orchestration.settings.neon import NeonSettings
from usage_orchestration.settings.phala import PhalaSettings

SETTINGS_FILE_ENV = "USAGE_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = "usage_orchestration.yaml"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"


class SettingsError(ValueError):
    """A setting is wrong. The message names every bad key and what is wrong with its value."""


class SandboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Loopback address the sandbox binds to.")
    port: int = Field(8765, ge=1, le=65535)
    seed: int = Field(7, description="Seed of the deterministic demo data.")

    @model_validator(mode="after")
    def _loopback_only(self) -> SandboxSettings:
        if not (self.host.startswith("127.") or self.host in ("localhost", "::1")):
            raise ValueError(f"sandbox.host must be a loopback address, got {self.host!r}")
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class LedgerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field("sql", pattern="^(sql|http)$", description="sql or http")
    database_url: str = Field(
        "sqlite:///.data/ledger.sqlite",
        description="SQLAlchemy URL of the credit ledger (read only). A password belongs in "
        "USAGE_LEDGER__DATABASE_URL, not in the file.",
    )
    api_base_url: str = Field(f"{DEFAULT_SANDBOX_URL}/ledger", description="Usage Reporting API")
    timeout_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=20, description="HTTP backend: attempts per request")
    retry_after_cap_s: float = Field(
        60.0, ge=0, description="HTTP backend: longest Retry-After wait"
    )


class AuditSettings(BaseModel):
    """The audits a provider load passes before it is published (warehouse/provider_load.py)."""

    model_config = ConfigDict(extra="forbid")

    max_drop_share: Decimal = Field(
        Decimal("0.5"),
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="a day whose usage of a metric falls by more than this share of what the "
        "last load held (or vanishes) fails the load unless the run has the tag "
        "usage/allow_drop=true",
    )


class StepRetrySettings(BaseModel):
    """Dagster-level retries of a provider step that failed on a transient error (after the
    client's own in-process retries, or when the provider asks to wait longer than their cap)."""

    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(2, ge=0, le=10, description="step retries on transient errors")
    wait_s: float = Field(
        60.0,
        ge=0,
        allow_inf_nan=False,
        description="wait before a step retry when the provider named no Retry-After",
    )


class UsageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    warehouse_url: str = Field(
        "sqlite:///.data/warehouse.sqlite",
        description="SQLAlchemy URL of the tables this project owns.",
    )
    state_dir: str = Field(
        ".data/state",
        description="Files every process shares: request budgets (rate limits) per provider.",
    )
    partitions_start: date = Field(
        date(2026, 1, 1), description="First day of the shared daily partitions (UTC)."
    )
    sandbox: SandboxSettings = SandboxSettings()
    ledger: LedgerSettings = LedgerSettings()
    phala: PhalaSettings = PhalaSettings()
    neon: NeonSettings = NeonSettings()
    forge: ForgeSettings = ForgeSettings()
    mappings: list[UsageMapping] = Field(
        default_factory=lambda: list(_default_mappings()),
        description="Which provider usage belongs to which ledger entity and resource type.",
    )
    rate_card: dict[str, RateCardEntry] = Field(
        default_factory=lambda: dict(_default_rate_card()),
        description="Per ledger resource type: unit conversion, credits per unit, tolerance.",
    )
    budgets: BudgetSettings = BudgetSettings()
    alerts: AlertSettings = AlertSettings()
    audit: AuditSettings = AuditSettings()
    step_retries: StepRetrySettings = StepRetrySettings()

    @model_validator(mode="after")
    def _mappings_have_rates(self) -> UsageSettings:
        for i, m in enumerate(self.mappings):
            if m.resource_type not in self.rate_card:
                raise ValueError(
                    f"mappings[{i}] ({m.provider} {m.resource_id or '*'} {m.metric or '*'}): "
                    f"resource_type {m.resource_type!r} has no rate_card entry"
                )
        return self


def _default_mappings() -> list[UsageMapping]:
    from usage_orchestration.settings.defaults import DEFAULT_MAPPINGS

    return DEFAULT_MAPPINGS


def _default_rate_card() -> dict[str, RateCardEntry]:
    from usage_orchestration.settings.defaults import DEFAULT_RATE_CARD

    return DEFAULT_RATE_CARD


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid settings ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        if _looks_secret(key):
            shown = ""
        lines.append(f"  {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(w in lowered for w in ("key", "token", "password", "secret", "url"))


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> UsageSettings:
    """Load and validate the settings; raise SettingsError naming each bad key.

    ``path`` (or ``$USAGE_SETTINGS_FILE``, or ``./usage_orchestration.yaml`` when present) is a
    YAML file; ``USAGE_*`` environment variables override it; ``overrides`` override both.
    """
    file_data: dict[str, Any] = {}
    source = "defaults and environment"
    chosen = path or os.environ.get(SETTINGS_FILE_ENV)
    if chosen is None and Path(DEFAULT_SETTINGS_FILE).exists():
        chosen = DEFAULT_SETTINGS_FILE
    if chosen is not None:
        p = Path(chosen)
        if not p.is_file():
            raise SettingsError(f"settings file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"settings file {str(p)!r} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"settings file {str(p)!r} must hold a mapping at the top level")
        file_data = loaded
        source = f"file {str(p)!r} and environment"
    try:
        merged = _merge(file_data, _env_layer())
        merged = _merge(merged, overrides)
        return UsageSettings(**merged)
    except ValidationError as err:
        raise SettingsError(_format_validation_error(err, source)) from None


def _env_layer() -> dict[str, Any]:
    """USAGE_A__B=value → {"a": {"b": value}} (values stay strings; pydantic converts them)."""
    out: dict[str, Any] = {}
    for name, value in os.environ.items():
        if (
            not name.startswith("USAGE_")
            or name == SETTINGS_FILE_ENV
            or name.startswith("USAGE_TEST_")
        ):
            continue  # USAGE_TEST_* belong to the test suite (e.g. USAGE_TEST_POSTGRES_URL)
        parts = name[len("USAGE_") :].lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            raw: Any = value
            if value.startswith(("[", "{")):
                try:
                    raw = yaml.safe_load(value)
                except yaml.YAMLError:
                    raw = value
            node[parts[-1]] = raw
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


__all__ = [
    "AlertSettings",
    "AuditSettings",
    "BudgetSettings",
    "ForgeSettings",
    "LedgerSettings",
    "NeonSettings",
    "PhalaSettings",
    "RateCardEntry",
    "SandboxSettings",
    "SettingsError",
    "UsageMapping",
    "UsageSettings",
    "load_settings",
]
