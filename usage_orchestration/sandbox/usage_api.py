"""The Usage Reporting API (specs/usage-reporting-ledger.md) over the demo ledger database.

Routes under ``/ledger``: ``GET /api/usage`` (startDate/endDate, inclusive ISO dates, default
the current month through today), ``GET /api/usage/monthly`` (months 1..24),
``GET /api/usage/top-consumers`` (days 1..365, limit 1..50) and
``GET /api/usage/resource-types``. Every figure is computed by SQL from the ledger at
``sb.ledger_url`` (``ledger/sql.py``); the bearer token is ``Sandbox.API_KEYS["ledger"]``.
Numbers are JSON numbers as in the spec. Without a ledger database the API answers 503.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from usage_orchestration.core.dates import month_of
from usage_orchestration.ledger.base import SyncStatus
from usage_orchestration.ledger.sql import CreditPoolNotConfigured, LedgerError, SqlLedger
from usage_orchestration.sandbox.core import json_response

if TYPE_CHECKING:
    from usage_orchestration.sandbox.core import Sandbox

API = "ledger"


def _num(d: Decimal) -> float | int:
    """A JSON number, as the real API sends (integral values without a fraction)."""
    return int(d) if d == d.to_integral_value() else float(d)


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _pool(led: SqlLedger, as_of: date) -> dict[str, Any] | None:
    """The month's pool; null when the ledger has none for the month (not configured)."""
    try:
        p = led.credit_pool(as_of)
    except CreditPoolNotConfigured:
        return None
    return {"included": _num(p.included), "used": _num(p.used), "remaining": _num(p.remaining)}


def _sync(s: SyncStatus) -> dict[str, Any]:
    return {
        "syncedAt": _ts(s.synced_at),
        "lastSyncFailedAt": _ts(s.last_sync_failed_at),
        "lastSyncFailureCode": s.last_sync_failure_code,
        "stalenessLevel": s.staleness_level,
    }


class _BadRequest(ValueError):
    pass


def _date_param(req: httpx.Request, name: str, default: date) -> date:
    raw = req.url.params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        raise _BadRequest(f"{name} must be an ISO date (YYYY-MM-DD), got {raw!r}") from None


def _int_param(req: httpx.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = req.url.params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise _BadRequest(f"{name} must be between {lo} and {hi}, got {value}")
    return value


# A route's work: the request and the ledger → the JSON body (raise _BadRequest for a 400).
Handler = Callable[["Sandbox", httpx.Request, SqlLedger], Any]


def register(sb: Sandbox) -> None:
    readers: dict[str, SqlLedger] = {}  # one reader per ledger URL the sandbox is pointed at

    def reader() -> SqlLedger | None:
        if sb.ledger_url is None:
            return None
        if sb.ledger_url not in readers:
            readers[sb.ledger_url] = SqlLedger(sb.ledger_url)
        return readers[sb.ledger_url]

    for path, fn in (
        ("/ledger/api/usage", _usage),
        ("/ledger/api/usage/monthly", _monthly),
        ("/ledger/api/usage/top-consumers", _top_consumers),
        ("/ledger/api/usage/resource-types", _resource_types),
    ):
        sb.route(API, "GET", path)(_guarded(sb, reader, fn))


def _guarded(
    sb: Sandbox, reader: Callable[[], SqlLedger | None], fn: Handler
) -> Callable[[httpx.Request, dict[str, str]], httpx.Response]:
    """The API's envelope: the request recorded, the bearer token checked, errors as 400/503."""

    def handler(req: httpx.Request, p: dict[str, str]) -> httpx.Response:
        sb.record(API, {"method": req.method, "path": req.url.path, "params": dict(req.url.params)})
        if req.headers.get("Authorization") != f"Bearer {sb.API_KEYS['ledger']}":
            return json_response(401, {"message": "Unauthorized"})
        led = reader()
        if led is None:
            return json_response(503, {"message": "usage ledger not configured"})
        try:
            return json_response(200, fn(sb, req, led))
        except _BadRequest as exc:
            return json_response(400, {"message": str(exc)})
        except LedgerError as exc:
            return json_response(503, {"message": str(exc)})

    return handler


def _usage(sb: Sandbox, req: httpx.Request, led: SqlLedger) -> dict[str, Any]:
    today = sb.now().date()
    start = _date_param(req, "startDate", today.replace(day=1))
    end = _date_param(req, "endDate", today)
    if end < start:
        raise _BadRequest("endDate must not be before startDate")
    summary = [
        {
            "entityId": s["entity_id"],
            "entityType": s["entity_type"],
            "resourceType": s["resource_type"],
            "totalCredits": _num(s["credits"]),
            "totalEvents": s["events"],
        }
        for s in led.usage_summary(start, end)
    ]
    daily = [
        {"date": d.isoformat(), "resourceType": rt, "totalCredits": _num(c)}
        for d, rt, c in led.daily_totals(start, end)
    ]
    return {
        "usageSummary": summary,
        "dailyTotals": daily,
        "budgets": _budgets(led, end),
        "creditPool": _pool(led, end),
        "sync": _sync(led.sync_status()),
    }


def _budgets(led: SqlLedger, end: date) -> list[dict[str, Any]]:
    """Budgets in force in endDate's month, against that month's use through endDate."""
    entities = led.entities()
    used: dict[str, Decimal] = defaultdict(Decimal)
    for s in led.usage_summary(end.replace(day=1), end):
        used[s["entity_id"]] += s["credits"]
    budgets = []
    for b in led.budgets(month_of(end)):
        u = used.get(b.entity_id, Decimal(0))
        pct = (u / b.monthly_budget * 100) if b.monthly_budget else Decimal(0)
        ent = entities.get(b.entity_id, {})
        budgets.append(
            {
                "entityId": b.entity_id,
                "entityType": b.entity_type,
                "monthlyBudget": _num(b.monthly_budget),
                "creditsUsed": _num(u),
                "isOverBudget": u > b.monthly_budget,
                "budgetPercent": _num(pct.quantize(Decimal("0.1"))),
                "budgetRemaining": _num(b.monthly_budget - u),
                "entity": {
                    "name": ent.get("name"),
                    "slug": ent.get("slug"),
                    "ownerId": ent.get("owner_id"),
                },
            }
        )
    return budgets


def _monthly(sb: Sandbox, req: httpx.Request, led: SqlLedger) -> dict[str, Any]:
    months = _int_param(req, "months", 12, 1, 24)
    today = sb.now().date()
    first = today.replace(day=1)
    for _ in range(months - 1):
        first = (first - timedelta(days=1)).replace(day=1)
    history = [
        {"month": m, "resourceType": rt, "totalCredits": _num(c), "totalEvents": n}
        for m, rt, c, n in led.monthly_history(first, today)
    ]
    return {"history": history, "creditPool": _pool(led, today)}


def _top_consumers(sb: Sandbox, req: httpx.Request, led: SqlLedger) -> dict[str, Any]:
    days = _int_param(req, "days", 30, 1, 365)
    limit = _int_param(req, "limit", 10, 1, 50)
    end = sb.now().date()
    start = end - timedelta(days=days - 1)
    return {
        "windowDays": days,
        "startDate": start.isoformat(),
        "endDate": end.isoformat(),
        "topApps": _top_apps(led, start, end, limit),
        "topUsers": [
            {
                "actor": a["actor"],
                "actorType": a["actor_type"],
                "displayName": a["actor"],
                "totalCredits": _num(a["credits"]),
                "totalEvents": a["events"],
            }
            for a in led.top_actors(start, end, limit)
        ],
    }


def _top_apps(led: SqlLedger, start: date, end: date, limit: int) -> list[dict[str, Any]]:
    """The entities that used the most credits in the window, with their names."""
    entities = led.entities()
    per_entity: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for s in led.usage_summary(start, end):  # already aggregated per (entity, resource type)
        acc = per_entity[(s["entity_id"], s["entity_type"])]
        acc[0] += s["credits"]
        acc[1] += s["events"]
    apps = sorted(per_entity.items(), key=lambda kv: (-kv[1][0], kv[0][0]))[:limit]
    return [
        {
            "entityId": eid,
            "entityType": etype,
            "name": entities.get(eid, {}).get("name"),
            "slug": entities.get(eid, {}).get("slug"),
            "totalCredits": _num(c),
            "totalEvents": int(n),
        }
        for (eid, etype), (c, n) in apps
    ]


def _resource_types(sb: Sandbox, req: httpx.Request, led: SqlLedger) -> list[dict[str, Any]]:
    return [rt.model_dump() for rt in led.resource_types()]
