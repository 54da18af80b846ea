"""Hostile Neon answers: each is either a clear error (naming provider, org/project and window)
with nothing written over a first good load, or exactly the right rows. Never wrong data or a
silent zero."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from usage_orchestration.providers.http import ProviderResponseError, RetryPolicy
from usage_orchestration.providers.neon import NeonClient
from usage_orchestration.providers.records import FetchResult
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.warehouse.audit import AuditError
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ORG = "org-one"
P1, P2 = "p-one-111", "p-two-222"
DAYS = [date(2026, 3, 1), date(2026, 3, 2)]
WINDOW = "2026-03-01T00:00:00Z..2026-03-03T00:00:00Z granularity daily"
METRICS = ["compute_unit_seconds", "root_branch_bytes_month"]
CU, ROOT = METRICS

Body = dict[str, Any]


def frame(day: int, cu: Any = 84, root: Any = 758513664) -> Body:
    return {
        "timeframe_start": f"2026-03-{day:02d}T00:00:00Z",
        "timeframe_end": f"2026-03-{day + 1:02d}T00:00:00Z",
        "metrics": [{"metric_name": CU, "value": cu}, {"metric_name": ROOT, "value": root}],
    }


def project(pid: str, frames: list[Body] | None = None) -> Body:
    return {
        "project_id": pid,
        "periods": [
            {
                "period_id": f"period-{pid}",
                "period_plan": "launch",
                "period_start": "2026-02-02T18:04:52Z",
                "consumption": frames if frames is not None else [frame(1), frame(2)],
            }
        ],
    }


def good_body() -> Body:
    return {"projects": [project(P1), project(P2)], "pagination": {"cursor": P2}}


def serve(body: Body | bytes) -> Callable[[httpx.Request], httpx.Response]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda _req: httpx.Response(200, content=raw)


def client(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> NeonClient:
    opts: dict[str, Any] = {
        "metrics": METRICS,
        "project_ids": [P1, P2],
        "transport": httpx.MockTransport(handler),
        "now": lambda: NOW,
        "retry": RetryPolicy(max_attempts=1),
        "sleep": lambda _s: None,
    }
    opts.update(kw)
    return NeonClient("http://neon.test", "key", ORG, **opts)


def fetch(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> FetchResult:
    with client(handler, **kw) as c:
        return c.fetch_days(DAYS)


def snapshot(wh: Warehouse) -> tuple[list[tuple], list[tuple]]:
    with wh.engine.connect() as conn:
        usage = sorted(tuple(r) for r in conn.execute(select(provider_usage)))
        cov = sorted(tuple(r) for r in conn.execute(select(provider_coverage)))
    return usage, cov


@pytest.fixture
def loaded(db_url: str, tmp_path: Path) -> tuple[Warehouse, UsageSettings]:
    """A warehouse holding a first good load of DAYS."""
    settings = load_settings(warehouse_url=db_url, state_dir=str(tmp_path / "state"))
    wh = Warehouse(db_url)
    store_fetch(wh, "neon", DAYS, fetch(serve(good_body())), settings, "good-load")
    return wh, settings


# -- mutations --------------------------------------------------------------------------------
def on_metric(key: str, value: Any, *, drop: bool = False) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        m = b["projects"][0]["periods"][0]["consumption"][0]["metrics"][0]
        if drop:
            del m[key]
        else:
            m[key] = value

    return mutate


def on_frame(key: str, value: Any, *, drop: bool = False) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        f = b["projects"][0]["periods"][0]["consumption"][0]
        if drop:
            del f[key]
        else:
            f[key] = value

    return mutate


def on_period(key: str, value: Any, *, drop: bool = False) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        p = b["projects"][0]["periods"][0]
        if drop:
            del p[key]
        else:
            p[key] = value

    return mutate


def on_project(key: str, value: Any, *, drop: bool = False) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        p = b["projects"][0]
        if drop:
            del p[key]
        else:
            p[key] = value

    return mutate


def on_body(key: str, value: Any, *, drop: bool = False) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        if drop:
            del b[key]
        else:
            b[key] = value

    return mutate


def replace_frames(*frames: Body) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        b["projects"][0]["periods"][0]["consumption"] = list(frames)

    return mutate


def part(day: int, t0: str, t1: str, cu: Any = 84, root: Any = 758513664) -> Body:
    """A timeframe covering part of one UTC day (``24:00:00`` is the next midnight)."""
    end = f"2026-03-{day + 1:02d}T00:00:00Z" if t1 == "24:00:00" else f"2026-03-{day:02d}T{t1}Z"
    return {
        **frame(day, cu, root),
        "timeframe_start": f"2026-03-{day:02d}T{t0}Z",
        "timeframe_end": end,
    }


def split_period(pid: str, head: list[Body], tail: list[Body]) -> list[Body]:
    """Two billing periods turning over at 2026-03-01T18:04:52Z."""
    return [
        {
            "period_id": f"period-{pid}",
            "period_plan": "launch",
            "period_start": "2026-02-01T18:04:52Z",
            "period_end": "2026-03-01T18:04:52Z",
            "consumption": head,
        },
        {
            "period_id": f"period-{pid}-next",
            "period_plan": "scale",
            "period_start": "2026-03-01T18:04:52Z",
            "consumption": tail,
        },
    ]


def day_split_across_periods(b: Body) -> None:
    # the day the period turns over, clipped at that instant: 60 + 24 and 700000000 + 58513664
    b["projects"][0]["periods"] = split_period(
        P1,
        [part(1, "00:00:00", "18:04:52", cu=60, root=700000000)],
        [part(1, "18:04:52", "24:00:00", cu=24, root=58513664), frame(2)],
    )


def overlap_across_periods(b: Body) -> None:
    b["projects"][0]["periods"] = split_period(
        P1, [part(1, "00:00:00", "18:04:52")], [part(1, "12:00:00", "24:00:00"), frame(2)]
    )


def conflicting_frame(b: Body) -> None:
    b["projects"][0]["periods"][0]["consumption"].append(frame(1, cu=999))


def conflicting_project(b: Body) -> None:
    b["projects"].append(project(P1, [frame(1, cu=1), frame(2)]))


def duplicate_metric(b: Body) -> None:
    b["projects"][0]["periods"][0]["consumption"][0]["metrics"].append(
        {"metric_name": CU, "value": 5}
    )


def unasked_project(b: Body) -> None:
    b["projects"].append(project("p-stranger-333"))


def raw(text: str, was: str = "84") -> bytes:
    # the first value `was` written as the literal JSON `text` (json.dumps cannot write NaN, 84.0)
    return json.dumps(good_body()).replace(f'"value": {was}', f'"value": {text}', 1).encode()


@dataclass
class Hostile:
    id: str
    mutate: Callable[[Body], None] | None = None
    body: bytes | None = None
    handler: Callable[[httpx.Request], httpx.Response] | None = None
    client: dict[str, Any] = field(default_factory=dict)
    says: str = ""  # the message must contain this (what is wrong)
    names: str = P1  # the org/project the message must name
    audit: bool = False  # caught by the warehouse's row audits (store_fetch), not the client

    def answer(self) -> Callable[[httpx.Request], httpx.Response]:
        if self.handler is not None:
            return self.handler
        if self.body is not None:
            return serve(self.body)
        b = copy.deepcopy(good_body())
        assert self.mutate is not None
        self.mutate(b)
        return serve(b)


def same_cursor(_req: httpx.Request) -> httpx.Response:
    # a full page whose cursor is the one it was asked with, forever
    return httpx.Response(200, json={"projects": [project(P1)], "pagination": {"cursor": P1}})


def cursor_cycle(req: httpx.Request) -> httpx.Response:
    nxt = {None: "c-a", "c-a": "c-b", "c-b": "c-a"}[req.url.params.get("cursor")]
    return httpx.Response(200, json={"projects": [project(P1)], "pagination": {"cursor": nxt}})


ORG_MODE = {"project_ids": (), "page_limit": 1}

ERRORS = [
    # wrong types
    Hostile("value-string", on_metric("value", "84"), says="integer"),
    Hostile("value-float", on_metric("value", 84.5), says="integer"),
    Hostile("value-bool", on_metric("value", True), says="integer"),
    Hostile("value-null", on_metric("value", None), says="integer"),
    Hostile("metric-name-number", on_metric("metric_name", 7), says="metric_name"),
    Hostile("project-id-number", on_project("project_id", 12345), says="project_id", names=ORG),
    Hostile("timeframe-start-epoch", on_frame("timeframe_start", 1772323200), says="RFC 3339"),
    Hostile("timeframe-start-garbage", on_frame("timeframe_start", "yesterday"), says="datetime"),
    # missing fields
    Hostile("metric-name-missing", on_metric("metric_name", None, drop=True), says="metric_name"),
    Hostile("value-missing", on_metric("value", None, drop=True), says="value"),
    Hostile(
        "timeframe-start-missing",
        on_frame("timeframe_start", None, drop=True),
        says="timeframe_start",
    ),
    Hostile(
        "timeframe-end-missing", on_frame("timeframe_end", None, drop=True), says="timeframe_end"
    ),
    Hostile("period-id-missing", on_period("period_id", None, drop=True), says="period_id"),
    Hostile(
        "period-start-missing", on_period("period_start", None, drop=True), says="period_start"
    ),
    # missing or null lists: an error, never zero
    Hostile("projects-missing", on_body("projects", None, drop=True), says="projects", names=ORG),
    Hostile("projects-null", on_body("projects", None), says="projects", names=ORG),
    Hostile("empty-answer", body=b"{}", says="projects", names=ORG),
    Hostile("periods-missing", on_project("periods", None, drop=True), says="periods"),
    Hostile("periods-null", on_project("periods", None), says="periods"),
    Hostile("consumption-missing", on_period("consumption", None, drop=True), says="consumption"),
    Hostile("consumption-null", on_period("consumption", None), says="consumption"),
    Hostile("metrics-missing", on_frame("metrics", None, drop=True), says="metrics"),
    Hostile("metrics-null", on_frame("metrics", None), says="metrics"),
    Hostile("metrics-not-a-list", on_frame("metrics", {"compute_unit_seconds": 1}), says="metrics"),
    # values no integer count can have
    Hostile("value-negative", on_metric("value", -84), says="negative"),
    Hostile("value-nan", body=raw("NaN"), says="integer"),
    Hostile("value-infinity", body=raw("Infinity"), says="integer"),
    Hostile("value-float-negative-integral", body=raw("-84.0"), says="negative"),
    # 2**53 + 2 as a float: integral, but past the floats that are exact integers
    Hostile("value-float-not-exact", body=raw("9007199254740994.0"), says="integer"),
    Hostile("value-huge", on_metric("value", 10**27), says="26 digits", audit=True),
    # timeframes that do not answer the request
    Hostile("timeframe-after-window", replace_frames(frame(1), frame(5)), says="outside"),
    Hostile("timeframe-before-window", replace_frames(frame(1), frame(0)), says="outside"),
    Hostile(
        "timeframe-two-days",
        on_frame("timeframe_end", "2026-03-03T00:00:00Z"),
        says="crosses a UTC midnight",
    ),
    Hostile(
        "timeframe-across-midnight",
        replace_frames(
            {
                **frame(1),
                "timeframe_start": "2026-03-01T18:00:00Z",
                "timeframe_end": "2026-03-02T06:00:00Z",
            },
        ),
        says="crosses a UTC midnight",
    ),
    Hostile(
        "timeframe-end-before-start",
        on_frame("timeframe_end", "2026-02-28T00:00:00Z"),
        says="does not end after it starts",
    ),
    Hostile(
        "timeframe-empty",
        on_frame("timeframe_end", "2026-03-01T00:00:00Z"),
        says="does not end after it starts",
    ),
    # parts of one day that overlap would count the overlap twice
    Hostile(
        "timeframes-overlap-in-a-period",
        replace_frames(part(1, "00:00:00", "12:00:00"), part(1, "06:00:00", "24:00:00"), frame(2)),
        says="overlaps",
    ),
    Hostile("timeframes-overlap-across-periods", overlap_across_periods, says="overlaps"),
    # duplicates that disagree
    Hostile("duplicate-timeframe-conflicting", conflicting_frame, says="twice with different"),
    Hostile("duplicate-project-conflicting", conflicting_project, says="twice with different"),
    Hostile("duplicate-metric-in-timeframe", duplicate_metric, says="twice"),
    # answers to another question
    Hostile("project-not-asked-for", unasked_project, says="not asked for", names="p-stranger-333"),
    Hostile(
        "page-longer-than-limit",
        lambda b: None,
        client={"page_limit": 1},
        says="more than the limit 1",
        names=ORG,
    ),
    Hostile("cursor-repeated", handler=same_cursor, client=ORG_MODE, says="cursor", names=ORG),
    Hostile("cursor-cycle", handler=cursor_cycle, client=ORG_MODE, says="repeated", names=ORG),
]


@pytest.mark.parametrize("case", ERRORS, ids=[c.id for c in ERRORS])
def test_hostile_answer_is_a_clear_error_and_writes_nothing(
    case: Hostile, loaded: tuple[Warehouse, UsageSettings]
) -> None:
    wh, settings = loaded
    before = snapshot(wh)
    assert before[0] and before[1]
    expected: type[Exception] = AuditError if case.audit else ProviderResponseError
    with pytest.raises(expected) as err:
        result = fetch(case.answer(), **case.client)
        store_fetch(wh, "neon", DAYS, result, settings, "hostile-load")
    msg = str(err.value)
    assert msg.startswith("neon"), msg
    assert case.names in msg, msg
    # the window: the request's span for the client, the record's day for the row audits
    assert (DAYS[0].isoformat() if case.audit else WINDOW) in msg, msg
    assert case.says in msg, msg
    assert snapshot(wh) == before


# -- tolerated answers: exactly the right rows -------------------------------------------------
def good_rows() -> set[tuple[str, str, date, Decimal]]:
    return {
        (p, m, d, Decimal(84 if m == CU else 758513664))
        for p in (P1, P2)
        for m in METRICS
        for d in DAYS
    }


def unknown_metric(b: Body) -> None:
    b["projects"][0]["periods"][0]["consumption"][0]["metrics"].append(
        {"metric_name": "future_metric_seconds", "value": 5}
    )


def identical_project(b: Body) -> None:
    b["projects"].append(copy.deepcopy(b["projects"][0]))


def bucket_at_the_end(b: Body) -> None:
    # a server reading `to` as inclusive also answers the day that starts at `to`
    for p in b["projects"]:
        p["periods"][0]["consumption"].append(frame(3, cu=999))


TOLERATED = [
    Hostile("timeframe-starting-at-to-is-dropped", bucket_at_the_end),
    Hostile(
        "unknown-metric-is-kept",
        unknown_metric,
        says="",
    ),
    Hostile("identical-duplicate-project-collapses", identical_project),
    Hostile("pagination-missing", on_body("pagination", None, drop=True)),
    Hostile("pagination-null", on_body("pagination", None)),
    Hostile("last-page-without-cursor", on_body("pagination", {})),
    Hostile("unknown-fields-ignored", on_frame("granularity_note", "x")),
    # JSON Schema's integer matches a number with a zero fractional part, whatever its spelling
    # a daily timeframe may be part of a UTC day (the document never promises whole days)
    Hostile(
        "timeframe-part-of-a-day",
        replace_frames({**frame(1), "timeframe_start": "2026-03-01T06:00:00Z"}, frame(2)),
    ),
    Hostile(
        "day-in-parts-of-one-period-adds-up",
        replace_frames(
            part(1, "00:00:00", "06:00:00", cu=80, root=0),
            part(1, "06:00:00", "24:00:00", cu=4, root=758513664),
            frame(2),
        ),
    ),
    Hostile("day-split-across-two-periods-adds-up", day_split_across_periods),
    Hostile("value-integral-float", body=raw("84.0")),
    Hostile("value-integral-float-exponent", body=raw("7.58513664e8", was="758513664")),
]
EXTRA = {"unknown-metric-is-kept": {(P1, "future_metric_seconds", DAYS[0], Decimal(5))}}
PARTS = {  # rows beyond one per (project, metric, day): a day answered in two parts
    "day-in-parts-of-one-period-adds-up": len(METRICS),
    "day-split-across-two-periods-adds-up": len(METRICS),
}


@pytest.mark.parametrize("case", TOLERATED, ids=[c.id for c in TOLERATED])
def test_tolerated_answer_writes_exactly_the_right_rows(
    case: Hostile, loaded: tuple[Warehouse, UsageSettings]
) -> None:
    wh, settings = loaded
    result = fetch(case.answer())
    store_fetch(wh, "neon", DAYS, result, settings, "second-load")
    with wh.engine.connect() as conn:
        usage = conn.execute(
            select(
                provider_usage.c.resource_id,
                provider_usage.c.metric,
                provider_usage.c.usage_date,
                provider_usage.c.raw_quantity,
                provider_usage.c.raw_unit,
            )
        ).all()
        cov = conn.execute(
            select(
                provider_coverage.c.account_id,
                provider_coverage.c.usage_date,
                provider_coverage.c.status,
            )
        ).all()
    # a day may come in several timeframes (rows): what users rely on is each day's exact sum
    sums: dict[tuple[str, str, date], Decimal] = {}
    for r in usage:
        sums[(r[0], r[1], r[2])] = sums.get((r[0], r[1], r[2]), Decimal(0)) + Decimal(r[3])
    assert {(*k, v) for k, v in sums.items()} == good_rows() | EXTRA.get(case.id, set())
    assert len(usage) == len(good_rows()) + len(EXTRA.get(case.id, set())) + PARTS.get(case.id, 0)
    assert {r[4] for r in usage if r[1] == "future_metric_seconds"} <= {"unit"}
    assert sorted(cov) == sorted((p, d, "complete") for p in (P1, P2) for d in DAYS)
