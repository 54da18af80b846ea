"""Neon ``GET /api/v2/consumption_history/v2/projects`` (consumption metrics v2) per
specs/neon-consumption-metrics.md and provider-notes.md, served under ``/neon``.

Deterministic from (seed, project, day): monthly billing periods anchored per project at an odd
time of day (so the boundary day is split across two periods, with plan changes between them),
sparse metric lists (a metric with no usage is omitted), integer values in the raw units
(CU-seconds, byte-hours, bytes, branch-hours). Projects are paged newest first by cursor (the id
of the last project of the page); a range outside the lookback of its granularity, measured from
``sb.now()``, answers 406.

Knobs (``sb.state["neon"]``, also settable over ``/_sandbox/state/neon``):
``projects`` (how many projects the org has, default 3: the demo projects first),
``orgs`` (org ids that exist, default ``["org-sandbox-1"]``), ``eligible`` (False → 403),
``rate_limit`` / ``rate_window_s`` (requests allowed per sliding window per account, counted
here in real time; default 50 per 60 s, above it 429), ``retry_after`` (a Retry-After value to
send with a 429; Neon documents none), ``last_page_cursor`` (default True: the last page still
carries a cursor). A ``project_ids`` filter naming a project the org does not have answers
without it, as Neon does; the client then records that project's days ``unavailable``.
"""

from __future__ import annotations

import re
import time as _time
import uuid
from collections import deque
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from usage_orchestration.sandbox.core import json_response
from usage_orchestration.sandbox.data import rng, stable_id
from usage_orchestration.settings.neon import DEMO_PROJECTS, NEON_METRICS

if TYPE_CHECKING:
    from usage_orchestration.providers.records import UsageRow
    from usage_orchestration.sandbox.core import Sandbox
    from usage_orchestration.settings import UsageSettings

PATH = "/neon/api/v2/consumption_history/v2/projects"
DEFAULT_ORG = "org-sandbox-1"
EARLIEST = datetime(2024, 3, 1, tzinfo=UTC)
GRANULARITIES = ("hourly", "daily", "monthly")
_ADJ = (
    "delicate",
    "quiet",
    "cold",
    "bold",
    "misty",
    "plain",
    "round",
    "silent",
    "wild",
    "young",
    "autumn",
    "billowing",
    "broad",
    "dry",
    "falling",
    "fragrant",
    "green",
    "late",
    "lingering",
)
_NOUN = (
    "dawn",
    "snow",
    "poetry",
    "river",
    "forest",
    "meadow",
    "sun",
    "leaf",
    "wave",
    "cloud",
    "field",
    "frost",
    "glade",
    "haze",
    "moon",
    "pine",
    "rain",
    "sea",
    "shadow",
    "smoke",
)


# -- deterministic data ------------------------------------------------------------------------------
def project_ids(seed: int, count: int) -> list[str]:
    """The org's projects, oldest first: the demo projects, then generated ones."""
    out = list(DEMO_PROJECTS[:count])
    i = 0
    while len(out) < count:
        r = rng(seed, "neon-project", i)
        pid = f"{r.choice(_ADJ)}-{r.choice(_NOUN)}-{r.randint(0, 99_999_999):08d}"
        if pid not in out:
            out.append(pid)
        i += 1
    return out


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def billing_periods(
    seed: int, project_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The project's billing periods overlapping [start, end): one a month, anchored on a day
    and an odd time of day; the plan changes now and then between periods."""
    r = rng(seed, "neon-anchor", project_id)
    anchor_day = r.randint(1, 28)
    offset = timedelta(hours=r.randint(0, 23), minutes=r.randint(0, 59), seconds=r.randint(0, 59))
    month = _month_start((start - timedelta(days=32)).date())
    out = []
    while True:
        p_start = _midnight(month.replace(day=anchor_day)) + offset
        nxt = _next_month(month)
        p_end = _midnight(nxt.replace(day=anchor_day)) + offset
        if p_start >= end:
            break
        if p_end > start:
            plan = rng(seed, "neon-plan", project_id, month).choice(("launch", "launch", "scale"))
            out.append(
                {
                    "period_id": str(
                        uuid.UUID(stable_id(seed, "neon-period", project_id, month, length=32))
                    ),
                    "period_plan": plan,
                    "period_start": p_start,
                    "period_end": p_end,
                }
            )
        month = nxt
    return out


def daily_metrics(seed: int, project_id: str, day: date) -> dict[str, int]:
    """The project's whole-day consumption in raw units; sparse (no usage → no entry)."""
    r = rng(seed, "neon", project_id, day)
    size = rng(seed, "neon-size", project_id)
    base_bytes = size.randint(500_000_000, 20_000_000_000)
    growth = size.randint(0, 50_000_000)
    epoch = (day - date(2024, 3, 1)).days
    out: dict[str, int] = {
        "root_branch_bytes_month": (base_bytes + growth * epoch + r.randint(0, 10_000_000)) * 24
    }
    if r.random() < 0.85:
        out["compute_unit_seconds"] = r.randint(300, 40_000)
    if r.random() < 0.5:
        out["child_branch_bytes_month"] = r.randint(100_000_000, 2_000_000_000) * 24
    if r.random() < 0.6:
        out["public_network_transfer_bytes"] = r.randint(1_000_000, 3_000_000_000)
    if r.random() < 0.1:
        out["private_network_transfer_bytes"] = r.randint(1_000_000, 500_000_000)
    if r.random() < 0.3:
        out["extra_branches_month"] = r.randint(1, 3) * 24
    if r.random() < 0.2:
        out["snapshot_storage_bytes_month"] = r.randint(10_000_000, 900_000_000) * 24
    if r.random() < 0.15:
        out["instant_restore_bytes_month"] = r.randint(10_000_000, 900_000_000) * 24
    return out


def _day_shares(
    seed: int, project_id: str, day: date, periods: list[dict[str, Any]]
) -> list[tuple[int, dict[str, int]]]:
    """The day's metrics split across the billing periods it overlaps (by time; integers that
    add up to the day's values): [(index into periods, metrics)]."""
    d0, d1 = _midnight(day), _midnight(day) + timedelta(days=1)
    overlaps = [
        (i, (min(d1, p["period_end"]) - max(d0, p["period_start"])).total_seconds())
        for i, p in enumerate(periods)
        if p["period_start"] < d1 and p["period_end"] > d0
    ]
    values = daily_metrics(seed, project_id, day)
    out: list[tuple[int, dict[str, int]]] = []
    given = dict.fromkeys(values, 0)
    for n, (i, secs) in enumerate(overlaps):
        share: dict[str, int] = {}
        for name, v in values.items():
            part = v - given[name] if n == len(overlaps) - 1 else int(v * secs // 86_400)
            given[name] += part
            if part:
                share[name] = part
        out.append((i, share))
    return out


def project_consumption(
    seed: int,
    project_id: str,
    granularity: str,
    start: datetime,
    end: datetime,
    metrics: list[str],
    now: datetime,
) -> dict[str, Any]:
    """One project's entry of the response body for [start, end) (both already rounded)."""
    periods = billing_periods(seed, project_id, start, end)
    frames: list[dict[tuple[datetime, datetime], dict[str, int]]] = [{} for _ in periods]
    day = start.date()
    while _midnight(day) < end:
        for i, share in _day_shares(seed, project_id, day, periods):
            if granularity == "monthly":
                m = _month_start(day)
                key = (_midnight(m), _midnight(_next_month(m)))
            else:
                key = (_midnight(day), _midnight(day) + timedelta(days=1))
            bucket = frames[i].setdefault(key, {})
            for name, v in share.items():
                if name in metrics:
                    bucket[name] = bucket.get(name, 0) + v
        day += timedelta(days=1)
    out_periods = []
    for p, by_frame in zip(periods, frames, strict=True):
        consumption = [
            {
                "timeframe_start": _iso(t0),
                "timeframe_end": _iso(t1),
                "metrics": [{"metric_name": n, "value": v} for n, v in values.items() if v],
            }
            for (t0, t1), values in sorted(by_frame.items())
        ]
        if not consumption:
            continue
        period: dict[str, Any] = {
            "period_id": p["period_id"],
            "period_plan": p["period_plan"],
            "period_start": _iso(p["period_start"]),
            "consumption": consumption,
        }
        if p["period_end"] <= now:  # period_end only on past billing periods
            period["period_end"] = _iso(p["period_end"])
        out_periods.append(period)
    return {"project_id": project_id, "periods": out_periods}


# -- the endpoint ------------------------------------------------------------------------------------
def _error(
    status: int,
    message: str,
    request: httpx.Request,
    code: str = "",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if request.headers.get("X-Request-ID"):
        body["request_id"] = request.headers["X-Request-ID"]
    return json_response(status, body, headers)


def _list_param(q: httpx.QueryParams, name: str) -> list[str]:
    return [x.strip() for v in q.get_list(name) for x in v.split(",") if x.strip()]


def _parse_dt(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _round(dt: datetime, granularity: str) -> datetime:
    if granularity == "hourly":
        return dt.replace(minute=0, second=0, microsecond=0)
    if granularity == "daily":
        return _midnight(dt.date())
    return _midnight(_month_start(dt.date()))


def _lookback_floor(now: datetime, granularity: str) -> datetime:
    if granularity == "hourly":
        return now - timedelta(hours=168)
    if granularity == "daily":
        return now - timedelta(days=60)
    return _midnight(_month_start((now - timedelta(days=365)).date()))


def _rate_limited(sb: Sandbox, account: str, state: dict[str, Any]) -> bool:
    limit = int(state.get("rate_limit", 50))
    window = float(state.get("rate_window_s", 60.0))
    with sb.lock:
        limiters = sb.state.setdefault("neon", {}).setdefault("_limiter", {})
        sent: deque[float] = limiters.setdefault(account, deque())
        now = _time.monotonic()
        while sent and sent[0] <= now - window:
            sent.popleft()
        if len(sent) >= limit:
            return True
        sent.append(now)
        return False


def register(sb: Sandbox) -> None:
    @sb.route("neon", "GET", PATH)
    def consumption(req: httpx.Request, _p: dict[str, str]) -> httpx.Response:
        response = _consumption(sb, req)
        sb.record(
            "neon",
            {
                "params": {k: req.url.params.get_list(k) for k in req.url.params},
                "status": response.status_code,
            },
        )
        return response


def _checked_query(
    sb: Sandbox, req: httpx.Request, state: dict[str, Any], org_id: str
) -> tuple[str, datetime, datetime, int, list[str], list[str]] | httpx.Response:
    """The request's granularity, rounded window, page size, project filter and metrics, or the
    error the API answers for the first parameter it refuses (in the document's order)."""
    q = req.url.params
    if not re.fullmatch(r"[a-z0-9-]{1,60}", org_id):
        return _error(400, "org_id is required and must match ^[a-z0-9-]{1,60}$", req)
    metrics = _list_param(q, "metrics")
    if not metrics:
        return _error(400, "metrics is required", req)
    unknown = [m for m in metrics if m not in NEON_METRICS]
    if unknown:
        return _error(400, f"unsupported metrics: {', '.join(unknown)}", req)
    granularity = q.get("granularity", "")
    if granularity not in GRANULARITIES:
        return _error(400, "granularity must be one of hourly, daily, monthly", req)
    try:
        start = _round(_parse_dt(q["from"]), granularity)
        end = _round(_parse_dt(q["to"]), granularity)
    except (KeyError, ValueError):
        return _error(400, "from and to are required RFC 3339 date-times", req)
    try:
        limit = int(q.get("limit", "10"))
    except ValueError:
        return _error(400, "limit must be an integer", req)
    if not 1 <= limit <= 100:
        return _error(400, "limit must be between 1 and 100", req)
    wanted = _list_param(q, "project_ids")
    if len(wanted) > 100:
        return _error(400, "project_ids accepts at most 100 ids", req)
    if org_id not in state.get("orgs", [DEFAULT_ORG]):
        return _error(404, "organization not found or not accessible with this API key", req)
    if not state.get("eligible", True):
        return _error(403, "consumption metrics are not available on this organization's plan", req)
    now = sb.now()
    if start < EARLIEST:
        return _error(406, "from must not be earlier than 2024-03-01T00:00:00Z", req)
    if start < _lookback_floor(now, granularity):
        return _error(
            406, f"the requested range is outside the lookback for {granularity} granularity", req
        )
    if end <= start:
        return _error(406, "to must be after from (after rounding to the granularity)", req)
    if granularity == "hourly":
        return _error(400, "hourly granularity is not simulated by the sandbox", req)
    return granularity, start, end, limit, wanted, metrics


def _consumption(sb: Sandbox, req: httpx.Request) -> httpx.Response:
    if req.headers.get("Authorization") != f"Bearer {sb.API_KEYS['neon']}":
        return _error(401, "authentication required", req)
    state: dict[str, Any] = sb.state.get("neon", {})
    q = req.url.params
    org_id = q.get("org_id", "")
    if _rate_limited(sb, org_id or "-", state):
        headers = (
            {"Retry-After": str(state["retry_after"])}
            if state.get("retry_after") is not None
            else None
        )
        return _error(429, "rate limit exceeded", req, code="RATE_LIMITED", headers=headers)
    query = _checked_query(sb, req, state, org_id)
    if isinstance(query, httpx.Response):
        return query
    granularity, start, end, limit, wanted, metrics = query
    now = sb.now()
    newest_first = list(reversed(project_ids(sb.seed, int(state.get("projects", 3)))))
    if wanted:
        allowed = set(wanted)
        newest_first = [p for p in newest_first if p in allowed]
    offset = 0
    cursor = q.get("cursor")
    if cursor:
        if cursor not in newest_first:
            return _error(400, f"invalid cursor {cursor!r}", req)
        offset = newest_first.index(cursor) + 1
    page_ids = newest_first[offset : offset + limit]
    is_last = offset + limit >= len(newest_first)
    pagination: dict[str, Any] = {}
    if page_ids and (not is_last or state.get("last_page_cursor", True)):
        pagination["cursor"] = page_ids[-1]
    projects = [
        project_consumption(sb.seed, pid, granularity, start, end, metrics, now) for pid in page_ids
    ]
    return json_response(200, {"projects": projects, "pagination": pagination})


# -- the demo ledger's source ---------------------------------------------------------------------
def demo_usage(seed: int, settings: UsageSettings, day: date) -> list[UsageRow]:
    """The normalized daily rows the sandbox reports for the configured projects on ``day``
    (the demo projects when none are configured): what the demo ledger is seeded from."""
    from usage_orchestration.providers.neon import NeonProject, normalize_timeframe

    cfg = settings.neon
    pids = cfg.project_ids or list(DEMO_PROJECTS)
    start = _midnight(day)
    end = start + timedelta(days=1)
    now = end + timedelta(days=1)
    rows: list[UsageRow] = []
    for pid in pids:
        project = NeonProject.model_validate(
            project_consumption(seed, pid, "daily", start, end, list(cfg.metrics), now)
        )
        for period in project.periods:
            for frame in period.consumption:
                rows += normalize_timeframe(cfg.org_id, pid, period, frame, cfg.metrics, "daily")
    return rows
