"""Resources every part shares: the warehouse. Provider credentials live in
``defs/providers.py``, the ledger's in ``defs/ledger.py``, alert channels' in ``defs/alerts.py``."""

from __future__ import annotations

from functools import lru_cache

from dagster import ConfigurableResource
from sqlalchemy import make_url

from usage_orchestration.warehouse.store import Warehouse, safe_url


@lru_cache(maxsize=8)
def _warehouse(url: str) -> Warehouse:
    return Warehouse(url)


def warehouse_kind(url: str) -> str:
    """The Dagster kind naming the warehouse's system: ``postgres`` or ``sqlite``."""
    backend = make_url(url).get_backend_name()
    return "postgres" if backend == "postgresql" else backend


class WarehouseResource(ConfigurableResource):
    """The project's own tables (SQLAlchemy URL; a password belongs in the environment)."""

    url: str

    def get(self) -> Warehouse:
        wh = _warehouse(self.url)
        wh.ensure_schema()
        return wh

    def describe(self) -> str:
        return safe_url(self.url)
