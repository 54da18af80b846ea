"""Resources: the warehouse, provider credentials (secrets only from the environment via EnvVar)."""

from __future__ import annotations

from functools import lru_cache

from dagster import ConfigurableResource

from usage_orchestration.providers.http import RetryPolicy
from usage_orchestration.providers.phala import PhalaClient
from usage_orchestration.settings import PhalaSettings
from usage_orchestration.warehouse.store import Warehouse, safe_url


@lru_cache(maxsize=8)
def _warehouse(url: str) -> Warehouse:
    return Warehouse(url)


class WarehouseResource(ConfigurableResource):
    """The project's own tables (SQLAlchemy URL; a password belongs in the environment)."""

    url: str

    def get(self) -> Warehouse:
        wh = _warehouse(self.url)
        wh.ensure_schema()
        return wh

    def describe(self) -> str:
        return safe_url(self.url)


class PhalaApiResource(ConfigurableResource):
    """Phala Cloud credentials: ``api_key`` from PHALA_API_KEY."""

    api_key: str

    def client(self, settings: PhalaSettings) -> PhalaClient:
        return PhalaClient(
            settings.base_url,
            self.api_key,
            api_version=settings.api_version,
            page_size=settings.page_size,
            max_pages=settings.max_pages,
            timeout_s=settings.timeout_s,
            retry=RetryPolicy(
                max_attempts=settings.max_attempts, retry_after_cap_s=settings.retry_after_cap_s
            ),
        )
