"""Phala Cloud ``GET /api/v1/apps/{app_id}/usage`` per specs/phala-app-usage.md.

Hourly compute and storage records per CVM instance, deterministic from (seed, app, day).
Knobs (``state['phala']``): ``duplicates`` (records repeated across pages, testing billing_key
de-duplication), ``apps`` (ids that exist; default: any 40-hex id).
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from usage_orchestration.sandbox.core import json_response
from usage_orchestration.sandbox.data import rng, stable_id

if TYPE_CHECKING:
    from usage_orchestration.providers.records import UsageRow
    from usage_orchestration.sandbox.core import Sandbox
    from usage_orchestration.settings import UsageSettings

_HEX40 = set("0123456789abcdef")
RATE_COMPUTE_PER_MIN = Decimal("0.0009")  # USD per vCPU-minute in the demo
RATE_STORAGE_PER_MIN = Decimal("0.0000125")


def phala_records(seed: int, app_id: str, day: date) -> list[dict[str, Any]]:
    """Every usage record of ``app_id`` billed on ``day`` (UTC) (fresh copies: callers may
    change them)."""
    return [dict(r) for r in _day_records(seed, app_id, day)]


# The server rebuilds a request's whole window for every page: a year's window is 365 days of
# records per page, built once here instead (deterministic from the arguments).
@functools.lru_cache(maxsize=4096)
def _day_records(seed: int, app_id: str, day: date) -> tuple[dict[str, Any], ...]:
    return tuple(_build_records(seed, app_id, day))


def _build_records(seed: int, app_id: str, day: date) -> list[dict[str, Any]]:
    r = rng(seed, "phala", app_id, day)
    n_instances = 1 + rng(seed, "phala-instances", app_id).randint(0, 1)
    team_id = 100 + int(stable_id(seed, "team", app_id, length=4), 16) % 900
    project_id = 5000 + int(stable_id(seed, "project", app_id, length=4), 16) % 5000
    out: list[dict[str, Any]] = []
    for i in range(n_instances):
        instance_id = str(uuid.UUID(stable_id(seed, "instance", app_id, i, length=32)))
        vcpu = 2 if i == 0 else 4
        # the second instance runs only part of some days
        hours = range(24) if i == 0 else range(r.randint(0, 12), 24)
        for h in hours:
            start = datetime(day.year, day.month, day.day, h, tzinfo=UTC)
            minutes = 60 if (i == 0 or h != hours.start) else r.randint(5, 59)
            for usage_type, rate in (
                ("compute", RATE_COMPUTE_PER_MIN),
                ("storage", RATE_STORAGE_PER_MIN),
            ):
                cost = (rate * vcpu * minutes).quantize(Decimal("0.000001"))
                details = (
                    {"vcpu": vcpu, "memory_mb": 2048 * vcpu, "instance_type": f"tdx.{vcpu}vcpu"}
                    if usage_type == "compute"
                    else {"disk_gb": 20 * vcpu}
                )
                out.append(
                    {
                        "instance_id": instance_id,
                        "project_id": project_id,
                        "team_id": team_id,
                        "timestamp": (start + timedelta(minutes=minutes))
                        .isoformat()
                        .replace("+00:00", "Z"),
                        "event_type": "cvm_usage",
                        "cost": float(cost),
                        "details": json.dumps(details),
                        "usage_type": usage_type,
                        "billing_start": start.isoformat().replace("+00:00", "Z"),
                        "billing_end": (start + timedelta(hours=1))
                        .isoformat()
                        .replace("+00:00", "Z"),
                        "duration_minutes": minutes,
                        "billing_key": f"{instance_id}:{usage_type}:{start:%Y%m%d%H}",
                        "billing_hour": start.strftime("%Y-%m-%dT%H:00:00Z"),
                        "billing_day": day.isoformat(),
                    }
                )
    return out


def compute_minutes(seed: int, app_id: str, day: date) -> Decimal:
    """Total compute duration of ``app_id`` on ``day``: what the demo ledger is seeded from."""
    return sum(
        (
            Decimal(str(x["duration_minutes"]))
            for x in phala_records(seed, app_id, day)
            if x["usage_type"] == "compute"
        ),
        Decimal(0),
    )


def _parse_dt(value: str | None) -> datetime | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _validation_error(loc: list[Any], msg: str, typ: str) -> httpx.Response:
    return json_response(422, {"detail": [{"loc": loc, "msg": msg, "type": typ}]})


def _served_records(
    seed: int, app_id: str, start: datetime, end: datetime, duplicates: int
) -> list[dict[str, Any]]:
    """The app's records billed in [start, end), in the order the API pages them, with the
    ``duplicates`` knob's repeated records spread over them."""
    records: list[dict[str, Any]] = []
    day = start.date()
    while datetime(day.year, day.month, day.day, tzinfo=UTC) < end:
        for rec in phala_records(seed, app_id, day):
            if start <= _parse_dt(rec["billing_start"]) < end:  # type: ignore[operator]
                records.append(rec)
        day += timedelta(days=1)
    # undocumented ordering: newest billing hour first, as a real ClickHouse query might
    records.sort(key=lambda x: (x["billing_hour"], x["billing_key"]), reverse=True)
    if duplicates and records:
        step = max(1, len(records) // (duplicates + 1))
        for i in range(duplicates):
            records.insert(min(len(records), (i + 1) * step + i), dict(records[i * step]))
    return records


def register(sb: Sandbox) -> None:
    @sb.route("phala", "GET", "/phala/api/v1/apps/(?P<app_id>[^/]+)/usage")
    def usage(req: httpx.Request, p: dict[str, str]) -> httpx.Response:
        if req.headers.get("X-API-Key") != sb.API_KEYS["phala"]:
            return json_response(401, {"detail": "Not authenticated"})
        app_id = p["app_id"]
        state = sb.state.get("phala", {})
        known = state.get("apps")
        if (
            len(app_id) != 40
            or not set(app_id) <= _HEX40
            or (known is not None and app_id not in known)
        ):
            return json_response(404, {"detail": "App not found"})
        q = req.url.params
        try:
            limit = int(q.get("limit", "500"))
            offset = int(q.get("offset", "0"))
        except ValueError:
            return _validation_error(
                ["query", "limit"], "Input should be a valid integer", "int_parsing"
            )
        if not 1 <= limit <= 5000:
            return _validation_error(
                ["query", "limit"], "Input should be between 1 and 5000", "range"
            )
        if offset < 0:
            return _validation_error(
                ["query", "offset"], "Input should be >= 0", "greater_than_equal"
            )
        try:
            now = sb.now()
            start = _parse_dt(q.get("start_date")) or now - timedelta(days=7)
            end = _parse_dt(q.get("end_date")) or now
        except ValueError:
            return _validation_error(
                ["query", "start_date"], "Input should be a valid datetime", "datetime_parsing"
            )
        if end < start:
            return json_response(400, {"detail": "end_date must not be before start_date"})
        records = _served_records(sb.seed, app_id, start, end, int(state.get("duplicates", 0)))
        page = records[offset : offset + limit]
        return json_response(
            200,
            {
                "usage": page,
                "total": len(page),
                "total_cost": float(sum(Decimal(str(x["cost"])) for x in page)),
            },
        )


def demo_usage(seed: int, settings: UsageSettings, day: date) -> list[UsageRow]:
    """The normalized rows the sandbox reports for the configured apps on ``day``: what the demo
    ledger is seeded from (sandbox/demo_ledger.py)."""
    from usage_orchestration.providers.phala import PhalaUsageRecord, normalize

    fetched_at = datetime.now(UTC)
    return [
        normalize(PhalaUsageRecord.model_validate(rec), app_id, fetched_at)
        for app_id in settings.phala.app_ids
        for rec in phala_records(seed, app_id, day)
    ]
