"""The provider registry: one entry per provider, read by the assets, reconciliation, budgets,
alert rules and the demo.

Adding a provider means writing its client (``providers/<name>.py``), its settings model
(``settings/<name>.py``, one field on ``UsageSettings``) and one ``ProviderSpec`` below; the asset,
its pool, kinds, owners, checks and metadata come from the factory in ``defs/providers.py``.

Account identity: every provider reports fetch coverage per *account* (``DayCoverage.account_id``).
``accounts`` lists the configured accounts with the provider resource each one covers (``None``:
every resource, e.g. a whole Neon organization); reconciliation and completeness match these ids
exactly, never by substring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypedDict, TypeVar, Unpack

import httpx

from usage_orchestration.core.reconcile import CoverageAccount, ReconcileConfig
from usage_orchestration.providers import forge, neon, phala
from usage_orchestration.providers.http import ProviderClient, RequestBudgets, RetryPolicy
from usage_orchestration.providers.records import FetchChunk, FetchResult, FetchStats, FetchStream
from usage_orchestration.settings import UsageSettings

# A configured coverage account and the provider resource it covers (None: all of them).
Account = CoverageAccount


class FetchOptions(TypedDict, total=False):
    """How a fetch reaches its provider (both optional)."""

    transport: httpx.BaseTransport | None  # None: the network
    budgets: RequestBudgets | None  # where the request budgets live (None: files under state_dir)


# fetch(settings, credentials, days, **options) → rows and coverage for every day
Fetch = Callable[..., FetchResult]
# stream(settings, credentials, days, **options) → the fetch as chunks, for the loader
Stream = Callable[..., FetchStream]
C = TypeVar("C", bound=ProviderClient)


@dataclass(frozen=True)
class ProviderSpec:
    name: str  # the `provider` column, pool, tag and asset key prefix
    title: str  # for people: "Phala Cloud"
    secrets: Mapping[str, str]  # credential name → environment variable
    fetch: Fetch
    # the configured accounts of the provider's settings
    accounts: Callable[[Any], list[Account]]
    description: str
    # None: the whole fetch as one chunk (its rows are bounded by the provider's lookback)
    stream_fetch: Stream | None = None

    @property
    def asset_key(self) -> str:
        return f"{self.name}_usage"

    @property
    def pool(self) -> str:
        return self.name

    @property
    def resource_key(self) -> str:
        """The Dagster resource holding this provider's credentials."""
        return f"{self.name}_api"

    def settings_of(self, settings: UsageSettings) -> Any:
        return getattr(settings, self.name)

    def enabled(self, settings: UsageSettings) -> bool:
        return bool(self.settings_of(settings).enabled)

    def configured_accounts(self, settings: UsageSettings) -> list[Account]:
        return self.accounts(self.settings_of(settings))

    def stream(
        self,
        settings: UsageSettings,
        credentials: Mapping[str, str],
        days: Sequence[date],
        **options: Unpack[FetchOptions],
    ) -> FetchStream:
        """The fetch of ``days`` as a stream of chunks (requests go out as it is read)."""
        if self.stream_fetch is not None:
            return self.stream_fetch(settings, credentials, days, **options)
        stats = FetchStats()

        def whole() -> Iterator[FetchChunk]:
            result = self.fetch(settings, credentials, days, **options)
            stats.requests, stats.retries = result.requests, result.retries
            stats.budget_wait_s = result.budget_wait_s
            yield FetchChunk(list(result.rows), list(result.coverage))

        return FetchStream(whole(), stats)


# -- per-provider adapters: the settings and credentials → one fetch of a set of days -------------
def _client_fetch(
    open_client: Callable[..., C], read: Callable[[C, UsageSettings, Sequence[date]], FetchResult]
) -> Fetch:
    """A ``ProviderSpec.fetch``: ``read`` through a client that ``open_client`` makes from the
    settings, credentials and options, closed when the fetch returns."""

    def fetch(
        settings: UsageSettings,
        credentials: Mapping[str, str],
        days: Sequence[date],
        **options: Unpack[FetchOptions],
    ) -> FetchResult:
        with open_client(settings, credentials, **options) as client:
            return read(client, settings, days)

    return fetch


def _phala_client(
    settings: UsageSettings,
    credentials: Mapping[str, str],
    **options: Unpack[FetchOptions],
) -> phala.PhalaClient:
    cfg = settings.phala
    return phala.PhalaClient(
        cfg.base_url,
        credentials.get("api_key", ""),
        **phala.PhalaClient.settings_options(cfg),
        retry=RetryPolicy.of(cfg),
        transport=options.get("transport"),  # no budgets: Phala documents no rate limit
    )


def _phala_stream(
    settings: UsageSettings,
    credentials: Mapping[str, str],
    days: Sequence[date],
    **options: Unpack[FetchOptions],
) -> FetchStream:
    """Phala page by page: a year of hourly records per app is the one large fetch."""
    client = _phala_client(settings, credentials, **options)

    def chunks() -> Iterator[FetchChunk]:
        with client:  # open while the loader reads the pages, closed when it stops
            yield from client.stream_days(settings.phala.app_ids, days)

    return FetchStream(chunks(), client.stats)


def _neon_client(
    settings: UsageSettings,
    credentials: Mapping[str, str],
    **options: Unpack[FetchOptions],
) -> neon.NeonClient:
    return neon.client_from_settings(
        settings.neon, credentials.get("api_key", ""), settings.state_dir, **options
    )


def _forge_client(
    settings: UsageSettings,
    credentials: Mapping[str, str],
    **options: Unpack[FetchOptions],
) -> forge.ForgeClient:
    return forge.client_from_settings(
        settings.forge,
        credentials.get("email", ""),
        credentials.get("api_token", ""),
        settings.state_dir,
        **options,
    )


def _phala_accounts(cfg: Any) -> list[Account]:
    return [Account(app_id, app_id) for app_id in cfg.app_ids]


def _neon_accounts(cfg: Any) -> list[Account]:
    # configured projects are fetched (and covered) one by one; otherwise the organization
    if cfg.project_ids:
        return [Account(p, p) for p in cfg.project_ids]
    return [Account(cfg.org_id, None)]


def _forge_accounts(cfg: Any) -> list[Account]:
    return [
        Account(forge.coverage_account(app.app_id, resource), app.app_id)
        for app in cfg.apps
        for resource in app.resources
    ]


PHALA = ProviderSpec(
    name="phala",
    title="Phala Cloud",
    secrets={"api_key": "PHALA_API_KEY"},
    fetch=_client_fetch(_phala_client, lambda c, s, days: c.fetch_days(s.phala.app_ids, days)),
    stream_fetch=_phala_stream,
    accounts=_phala_accounts,
    description="Phala Cloud CVM metered usage (compute, storage) per app, normalized into "
    "provider_usage; a day's rows are replaced atomically on every materialization.",
)
NEON = ProviderSpec(
    name="neon",
    title="Neon",
    secrets={"api_key": "NEON_API_KEY"},
    fetch=_client_fetch(
        _neon_client,
        lambda c, s, days: c.fetch_days(days, outside_window=s.neon.outside_window),
    ),
    accounts=_neon_accounts,
    description="Neon consumption metrics v2 (compute CU-hours, storage GB-months, transfer GB) "
    "per project, normalized into provider_usage. Days outside Neon's 60-day daily window are "
    "recorded as unavailable with the reason, never as zero usage.",
)
FORGE = ProviderSpec(
    name="forge",
    title="Atlassian Forge",
    secrets={"email": "FORGE_EMAIL", "api_token": "FORGE_API_TOKEN"},
    fetch=_client_fetch(_forge_client, lambda c, s, days: c.fetch_days(s.forge.apps, days)),
    accounts=_forge_accounts,
    description="Atlassian Forge app resource usage (FUNCTION_COMPUTE GB-seconds and any "
    "configured resource) per app, flat or grouped by site or environment, normalized into "
    "provider_usage.",
)

PROVIDERS: tuple[ProviderSpec, ...] = (PHALA, NEON, FORGE)
BY_NAME: dict[str, ProviderSpec] = {p.name: p for p in PROVIDERS}


def provider(name: str) -> ProviderSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r} (known: {', '.join(BY_NAME)})") from None


def enabled_providers(settings: UsageSettings) -> list[ProviderSpec]:
    return [p for p in PROVIDERS if p.enabled(settings)]


def enabled_names(settings: UsageSettings) -> list[str]:
    return [p.name for p in enabled_providers(settings)]


def expected_accounts(settings: UsageSettings) -> dict[str, list[Account]]:
    """Configured accounts per enabled provider (what completeness expects every day)."""
    return {p.name: p.configured_accounts(settings) for p in enabled_providers(settings)}


def reconcile_config(settings: UsageSettings) -> ReconcileConfig:
    """What reconciliation needs from the settings: mappings, rate card, enabled providers and
    their configured accounts."""
    return ReconcileConfig(
        mappings=list(settings.mappings),
        rate_card=dict(settings.rate_card),
        providers=enabled_names(settings),
        accounts=expected_accounts(settings),
    )
