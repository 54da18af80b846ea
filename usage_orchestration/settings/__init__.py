"""The one typed, validated configuration of the project.

Read from a YAML file (``USAGE_SETTINGS_FILE``, else ``usage_orchestration.yaml`` in the working
directory when present) and from ``USAGE_``-prefixed environment variables (nested keys joined
with ``__``, e.g. ``USAGE_WAREHOUSE_URL`` or ``USAGE_PHALA__PAGE_SIZE``). Environment wins over
the file. Secrets are never read from here: they come from environment variables through
Dagster ``EnvVar`` (see ``defs/resources.py``; ``settings/secrets.py`` names them).

``profile: demo`` (the default) points at the loopback sandbox and SQLite files under ``.data/``;
``profile: production`` refuses those demo values (``settings/profiles.py``). Relative paths
(``state_dir``, SQLite URLs) resolve against the settings file's directory, or the working
directory when no file is read, once, at load.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from usage_orchestration.settings.alerts import AlertSettings
from usage_orchestration.settings.budgets import BudgetSettings
from usage_orchestration.settings.execution import BROKER_URL_ENVS, ExecutionSettings, url_password
from usage_orchestration.settings.fields import Attempts, Seconds, SecondsOrZero
from usage_orchestration.settings.forge import ForgeSettings
from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping
from usage_orchestration.settings.neon import NeonSettings
from usage_orchestration.settings.phala import PhalaSettings
from usage_orchestration.settings.profiles import Profile, ProfileError, production_problems
from usage_orchestration.settings.secrets import (
    LEDGER_DATABASE_URL_ENV,
    WAREHOUSE_URL_ENV,
    secret_problems,
)
from usage_orchestration.settings.urls import (
    DatabaseUrl,
    HttpUrl,
    LoopbackHost,
    has_password,
    resolve_path,
    resolve_sqlite_url,
    url_host,
)
from usage_orchestration.settings.urls import database_url as parse_database_url

SETTINGS_FILE_ENV = "USAGE_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = "usage_orchestration.yaml"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"


class SettingsError(ValueError):
    """A setting is wrong. The message names every bad key and what is wrong with its value."""


class SandboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: LoopbackHost = Field(
        "127.0.0.1", description="Loopback IP address the sandbox binds to (localhost: 127.0.0.1)."
    )
    port: int = Field(8765, ge=1, le=65535)
    seed: int = Field(7, description="Seed of the deterministic demo data.")

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host, self.port)}"


class LedgerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backend: str = Field("sql", pattern="^(sql|http)$", description="sql or http")
    database_url: DatabaseUrl = Field(
        "sqlite:///.data/ledger.sqlite",
        description="SQLAlchemy URL of the credit ledger (read only). A password belongs in "
        "USAGE_LEDGER__DATABASE_URL, not in the file.",
    )
    api_base_url: HttpUrl = Field(
        f"{DEFAULT_SANDBOX_URL}/ledger", description="Usage Reporting API"
    )
    timeout_s: Seconds = 30.0
    max_attempts: Attempts = Field(5, description="HTTP backend: attempts per request")
    retry_after_cap_s: SecondsOrZero = Field(
        60.0, description="HTTP backend: longest Retry-After wait"
    )


class AuditSettings(BaseModel):
    """The audits a provider load passes before it is published (warehouse/provider_load.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_retries: int = Field(2, ge=0, le=10, description="step retries on transient errors")
    wait_s: SecondsOrZero = Field(
        60.0, description="wait before a step retry when the provider named no Retry-After"
    )


RequestBudgetBackend = Literal["file", "warehouse"]


class RequestBudgetSettings(BaseModel):
    """Where the per-provider request budgets live (providers/http.py ``RequestBudget``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backend: Literal["auto", "file", "warehouse"] = Field(
        "auto",
        description="file: a small file per provider account under state_dir (shared by the "
        "processes of one host); warehouse: a table in the warehouse database, shared by every "
        "process on every host using that warehouse; auto: warehouse in profile production "
        "with a PostgreSQL warehouse, file otherwise",
    )


class UsageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    profile: Profile = Field(
        "demo",
        description="demo: the sandbox defaults; production: refuses sandbox URLs, the demo "
        "ledger, mappings and ids, and placeholder headers (settings/profiles.py)",
    )
    warehouse_url: DatabaseUrl = Field(
        "sqlite:///.data/warehouse.sqlite",
        description="SQLAlchemy URL of the tables this project owns.",
    )
    state_dir: str = Field(
        ".data/state",
        description="Files every process shares: request budgets (rate limits) per provider, "
        "exports. Relative: against the settings file's directory.",
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
    execution: ExecutionSettings = ExecutionSettings()
    request_budget: RequestBudgetSettings = RequestBudgetSettings()

    @property
    def request_budget_backend(self) -> RequestBudgetBackend:
        """The backend ``request_budget.backend`` resolves to. auto: a production PostgreSQL
        warehouse is what several hosts share, so the budget lives there; everything else (the
        demo, SQLite warehouses) keeps the embedded file under state_dir."""
        chosen = self.request_budget.backend
        if chosen != "auto":
            return chosen
        on_postgres = parse_database_url(self.warehouse_url).get_backend_name() == "postgresql"
        return "warehouse" if self.profile == "production" and on_postgres else "file"

    @model_validator(mode="after")
    def _mappings_have_rates(self) -> UsageSettings:
        for i, m in enumerate(self.mappings):
            if m.resource_type not in self.rate_card:
                raise ValueError(
                    f"mappings[{i}] ({m.provider} {m.resource_id or '*'} {m.metric or '*'}): "
                    f"resource_type {m.resource_type!r} has no rate_card entry"
                )
        return self

    @model_validator(mode="after")
    def _profile(self) -> UsageSettings:
        if self.profile == "production":
            problems = production_problems(self)
            if problems:
                raise ProfileError(self.profile, problems)
        return self

    @model_validator(mode="after")
    def _resolve_paths(self, info: ValidationInfo) -> UsageSettings:
        """Relative paths against ``base_dir`` (load_settings passes it): every process that
        reads the same file uses the same files, whatever its working directory."""
        base = (info.context or {}).get("base_dir")
        if base is None:
            return self
        # written past __setattr__, which would count the fields as explicitly set (the
        # production profile tells defaults from choices by that)
        self.__dict__["state_dir"] = resolve_path(self.state_dir, base)
        self.__dict__["warehouse_url"] = resolve_sqlite_url(self.warehouse_url, base)
        ledger = self.ledger.model_copy()  # never the caller's object, if one was passed
        ledger.__dict__["database_url"] = resolve_sqlite_url(ledger.database_url, base)
        self.__dict__["ledger"] = ledger
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
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ProfileError):
            lines.append(f"  profile production: {len(cause.problems)} problem(s):")
            lines += [f"    {p}" for p in cause.problems]
            continue
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


def settings_file(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The settings file that ``load_settings(path)`` reads, or None (defaults and env only)."""
    chosen = path or os.environ.get(SETTINGS_FILE_ENV)
    if chosen is None and Path(DEFAULT_SETTINGS_FILE).exists():
        chosen = DEFAULT_SETTINGS_FILE
    return None if chosen is None else Path(chosen)


def _read_file(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise SettingsError(f"settings file {str(p)!r} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise SettingsError(f"settings file {str(p)!r} must hold a mapping at the top level")
    return loaded


def _passwords_in_file(data: dict[str, Any], p: Path) -> None:
    """A database password written in the file would be copied wherever the file goes: it
    belongs in the environment (the whole URL), read through Dagster ``EnvVar``."""
    ledger = data.get("ledger") if isinstance(data.get("ledger"), dict) else {}
    found = [
        f"{key}: holds a password; put the whole URL in {env} instead"
        for key, value, env in (
            ("warehouse_url", data.get("warehouse_url"), WAREHOUSE_URL_ENV),
            ("ledger.database_url", ledger.get("database_url"), LEDGER_DATABASE_URL_ENV),
        )
        if isinstance(value, str) and has_password(value)
    ]
    execution = data.get("execution") if isinstance(data.get("execution"), dict) else {}
    found += [
        f"execution.{key}: holds a password; put the whole URL in {env} instead"
        for key, env in zip(("broker_url", "backend_url"), BROKER_URL_ENVS, strict=True)
        if isinstance(execution.get(key), str) and url_password(execution[key])
    ]
    if found:
        raise SettingsError(f"invalid settings (file {str(p)!r}):\n  " + "\n  ".join(found))


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> UsageSettings:
    """Load and validate the settings; raise SettingsError naming each bad key.

    ``path`` (or ``$USAGE_SETTINGS_FILE``, or ``./usage_orchestration.yaml`` when present) is a
    YAML file; ``USAGE_*`` environment variables override it; ``overrides`` override both.
    Relative paths resolve against the file's directory (the working directory without one).
    """
    file_data: dict[str, Any] = {}
    source = "defaults and environment"
    p = settings_file(path)
    base = Path.cwd()
    if p is not None:
        file_data = _read_file(p)
        _passwords_in_file(file_data, p)
        source = f"file {str(p)!r} and environment"
        base = p.resolve().parent
    try:
        merged = _merge(_merge(file_data, _env_layer()), overrides)
        return UsageSettings.model_validate(merged, context={"base_dir": base})
    except ValidationError as err:
        raise SettingsError(_format_validation_error(err, source)) from None


def require_secrets(settings: UsageSettings, environ: Mapping[str, str] | None = None) -> None:
    """Raise SettingsError naming every secret (by its variable) the enabled features need
    and the environment lacks or holds malformed; never shows a value."""
    problems = secret_problems(settings, environ)
    if problems:
        raise SettingsError("secrets: " + "; ".join(problems))


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
    "ExecutionSettings",
    "ForgeSettings",
    "LedgerSettings",
    "NeonSettings",
    "PhalaSettings",
    "RateCardEntry",
    "RequestBudgetSettings",
    "SandboxSettings",
    "SettingsError",
    "UsageMapping",
    "UsageSettings",
    "load_settings",
    "require_secrets",
    "settings_file",
]
