"""Building the configured ledger reader from the settings (plus the API token for HTTP)."""

from __future__ import annotations

from functools import lru_cache

import httpx

from usage_orchestration.ledger.base import LedgerReader, SyncStatus
from usage_orchestration.ledger.http import HttpLedger
from usage_orchestration.ledger.sql import SqlLedger
from usage_orchestration.providers.http import RetryPolicy
from usage_orchestration.settings import LedgerSettings, UsageSettings


@lru_cache(maxsize=8)
def sql_ledger(url: str) -> SqlLedger:
    """One ``SqlLedger`` (one engine and connection pool) per URL and process: sensors and
    assets that ask on every tick do not open a new pool each time."""
    return SqlLedger(url)


def make_ledger_reader(
    settings: UsageSettings | LedgerSettings,
    token: str | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
) -> LedgerReader:
    """``SqlLedger`` on ``ledger.database_url`` (backend ``sql``) or ``HttpLedger`` on
    ``ledger.api_base_url`` with ``token`` (backend ``http``; the token comes from the
    environment, ``LEDGER_API_TOKEN``, never from the settings)."""
    cfg = settings.ledger if isinstance(settings, UsageSettings) else settings
    if cfg.backend == "sql":
        return sql_ledger(cfg.database_url)
    if not token:
        raise ValueError(
            "ledger backend 'http' needs an API token: set LEDGER_API_TOKEN "
            f"(api_base_url {cfg.api_base_url})"
        )
    return HttpLedger(
        cfg.api_base_url,
        token,
        transport=transport,
        timeout_s=cfg.timeout_s,
        retry=RetryPolicy(max_attempts=cfg.max_attempts, retry_after_cap_s=cfg.retry_after_cap_s),
    )


def sync_problem(status: SyncStatus) -> str | None:
    """Why the License Manager sync is unhealthy (the staleness signal), or None when the most
    recent sync succeeded. Per the spec, ``lastSyncFailedAt`` is null after a good sync."""
    failed = status.last_sync_failed_at is not None and (
        status.synced_at is None or status.synced_at <= status.last_sync_failed_at
    )  # a failure followed by a good sync is over (the spec nulls it; some APIs keep it)
    if not failed and status.staleness_level is None:
        if status.synced_at is None:
            return "the ledger has never synced with the License Manager"
        return None
    parts = []
    if failed and status.last_sync_failed_at is not None:
        parts.append(
            f"last License Manager sync failed at {status.last_sync_failed_at.isoformat()}"
            f" ({status.last_sync_failure_code or 'unknown code'})"
        )
    if status.staleness_level is not None:
        parts.append(f"staleness level {status.staleness_level}")
    if status.synced_at is not None:
        parts.append(f"last good sync {status.synced_at.isoformat()}")
    return "; ".join(parts)
