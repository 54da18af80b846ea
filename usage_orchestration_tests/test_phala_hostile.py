"""Hostile Phala answers: each is either a clear error (naming provider, app and window) with
nothing written over a first good load, or exactly the right rows. Never wrong data or a silent
zero."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from usage_orchestration.providers.http import ProviderResponseError, RetryPolicy
from usage_orchestration.providers.phala import PhalaClient
from usage_orchestration.providers.records import FetchResult
from usage_orchestration.sandbox.phala import phala_records
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.warehouse.audit import AuditError
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse

APP = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
DAYS = [date(2026, 11, 1), date(2026, 11, 2)]
WINDOW = "2026-11-01..2026-11-02"
PAGE = 500

Record = dict[str, Any]
Body = dict[str, Any]
REQUIRED = [
    "instance_id",
    "project_id",
    "team_id",
    "timestamp",
    "event_type",
    "cost",
    "details",
    "usage_type",
    "billing_start",
    "billing_end",
    "duration_minutes",
    "billing_key",
    "billing_hour",
    "billing_day",
]


def good_records() -> list[Record]:
    return [r for d in DAYS for r in phala_records(7, APP, d)]


def page_of(records: list[Record]) -> Body:
    cost = sum(Decimal(str(r["cost"])) for r in records)
    return {"usage": records, "total": len(records), "total_cost": float(cost)}


def serve_pages(records: list[Record]) -> Callable[[httpx.Request], httpx.Response]:
    """An honest server over ``records``: limit and offset respected."""

    def handle(req: httpx.Request) -> httpx.Response:
        limit, offset = int(req.url.params["limit"]), int(req.url.params["offset"])
        return httpx.Response(200, json=page_of(records[offset : offset + limit]))

    return handle


def serve(body: Body | bytes) -> Callable[[httpx.Request], httpx.Response]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda _req: httpx.Response(200, content=raw)


def fetch(
    handler: Callable[[httpx.Request], httpx.Response], apps: list[str] | None = None, **kw: Any
) -> FetchResult:
    opts: dict[str, Any] = {"page_size": PAGE, "retry": RetryPolicy(max_attempts=1)}
    opts.update(kw)
    with PhalaClient(
        "http://phala.test", "key", transport=httpx.MockTransport(handler), **opts
    ) as c:
        return c.fetch_days(apps or [APP], DAYS)


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
    store_fetch(wh, "phala", DAYS, fetch(serve_pages(good_records())), settings, "good-load")
    return wh, settings


# -- mutations --------------------------------------------------------------------------------
def on_record(key: str, value: Any = None, *, drop: bool = False) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        if drop:
            del b["usage"][0][key]
        else:
            b["usage"][0][key] = value

    return mutate


def on_body(key: str, value: Any = None, *, drop: bool = False) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        if drop:
            del b[key]
        else:
            b[key] = value

    return mutate


def moved_to(day: str) -> Callable[[Body], None]:
    """The first record moved, consistently, to ``day`` (all its day fields agree)."""

    def mutate(b: Body) -> None:
        r = b["usage"][0]
        for k in ("timestamp", "billing_start", "billing_end", "billing_hour"):
            r[k] = day + r[k][10:]
        r["billing_day"] = day
        r["billing_key"] += ":moved"

    return mutate


def conflicting_copy(b: Body) -> None:
    b["usage"].append({**b["usage"][0], "cost": b["usage"][0]["cost"] + 1})


def raw(text: str) -> bytes:
    body = page_of(good_records())
    first = body["usage"][0]
    first["cost"] = "@@"
    return json.dumps(body).replace('"@@"', text, 1).encode()


def same_full_page(req: httpx.Request) -> httpx.Response:
    # offset ignored: the same full page at every offset
    limit = int(req.url.params["limit"])
    return httpx.Response(200, json=page_of(good_records()[:limit]))


def endless(req: httpx.Request) -> httpx.Response:
    # a fresh full page at every offset, never short
    limit, offset = int(req.url.params["limit"]), int(req.url.params["offset"])
    base = good_records()[0]
    recs = [{**base, "billing_key": f"k-{offset + i}"} for i in range(limit)]
    return httpx.Response(200, json=page_of(recs))


def ignores_limit(_req: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=page_of(good_records()))


@dataclass
class Hostile:
    id: str
    mutate: Callable[[Body], None] | None = None
    body: bytes | None = None
    handler: Callable[[httpx.Request], httpx.Response] | None = None
    client: dict[str, Any] = field(default_factory=dict)
    says: str = ""
    audit: bool = False  # caught by the warehouse's row audits (store_fetch), not the client

    def answer(self) -> Callable[[httpx.Request], httpx.Response]:
        if self.handler is not None:
            return self.handler
        if self.body is not None:
            return serve(self.body)
        b = copy.deepcopy(page_of(good_records()))
        assert self.mutate is not None
        self.mutate(b)
        return serve(b)


ERRORS = [
    # every required field of a record
    *[Hostile(f"record-{k}-missing", on_record(k, drop=True), says=k) for k in REQUIRED],
    # the page's required fields, absent or null: an error, never an empty page
    Hostile("usage-missing", on_body("usage", drop=True), says="usage"),
    Hostile("usage-null", on_body("usage", None), says="usage"),
    Hostile("usage-not-a-list", on_body("usage", {"a": 1}), says="usage"),
    Hostile("total-missing", on_body("total", drop=True), says="total"),
    Hostile("total-null", on_body("total", None), says="total"),
    Hostile("total-cost-missing", on_body("total_cost", drop=True), says="total_cost"),
    Hostile("total-cost-null", on_body("total_cost", None), says="total_cost"),
    Hostile("empty-answer", body=b"{}", says="usage"),
    # wrong types
    Hostile("cost-string", on_record("cost", "0.0018"), says="JSON number"),
    Hostile("cost-bool", on_record("cost", True), says="JSON number"),
    Hostile("cost-null", on_record("cost", None), says="JSON number"),
    Hostile("duration-string", on_record("duration_minutes", "60"), says="JSON number"),
    Hostile("project-id-string", on_record("project_id", "5001"), says="project_id"),
    Hostile("project-id-fractional", on_record("project_id", 5001.5), says="project_id"),
    Hostile("team-id-fractional", on_record("team_id", 5001.5), says="team_id"),
    Hostile("project-id-float-beyond-2-53", on_record("project_id", 2.0**53), says="project_id"),
    Hostile("total-fractional", on_body("total", 3.5), says="total"),
    Hostile("total-string", on_body("total", "3"), says="total"),
    Hostile("total-bool", on_body("total", True), says="total"),
    Hostile("team-id-bool", on_record("team_id", True), says="team_id"),
    Hostile("billing-key-number", on_record("billing_key", 12), says="billing_key"),
    Hostile("billing-key-empty", on_record("billing_key", ""), says="billing_key"),
    Hostile("billing-day-number", on_record("billing_day", 20261101), says="billing_day"),
    Hostile("billing-day-garbage", on_record("billing_day", "first of Nov"), says="billing_day"),
    Hostile("details-object", on_record("details", {"vcpu": 2}), says="details"),
    Hostile("timestamp-garbage", on_record("timestamp", "soon"), says="timestamp"),
    Hostile("billing-start-garbage", on_record("billing_start", "soon"), says="billing_start"),
    # numbers the warehouse must not hold
    Hostile("cost-negative", on_record("cost", -0.5), says="negative", audit=True),
    Hostile("duration-negative", on_record("duration_minutes", -60), says="negative", audit=True),
    Hostile("cost-huge", on_record("cost", 10**27), says="26 digits", audit=True),
    Hostile("duration-huge", on_record("duration_minutes", 1e27), says="26 digits", audit=True),
    Hostile("cost-nan", body=raw("NaN"), says="cost"),
    Hostile("cost-infinity", body=raw("Infinity"), says="cost"),
    Hostile("cost-minus-infinity", body=raw("-Infinity"), says="cost"),
    # records on days the request did not ask for, or that contradict their own day
    Hostile("billing-day-after-window", moved_to("2026-11-05"), says="outside the window"),
    # 2026-10-31 is the padded day asked for before start (dropped); the day before it is not
    Hostile("billing-day-before-window", moved_to("2026-10-30"), says="outside the window"),
    Hostile(
        "billing-day-disagrees-with-billing-start",
        on_record("billing_day", "2026-11-02"),
        says="disagrees with billing_start",
    ),
    Hostile(
        "timestamp-on-a-day-before-billing-day",
        on_record("timestamp", "2026-10-31T12:00:00Z"),
        says="on a day before its billing_day",
    ),
    Hostile(
        "billing-end-before-start",
        on_record("billing_end", "2026-10-31T00:00:00Z"),
        says="charge_period_end",
        audit=True,
    ),
    # duplicates that disagree, undecodable details
    Hostile("duplicate-billing-key-conflicting", conflicting_copy, says="twice with different"),
    Hostile("details-not-json", on_record("details", "{not json"), says="details"),
    # paging that does not page
    Hostile(
        "page-longer-than-limit",
        handler=ignores_limit,
        client={"page_size": 50},
        says="more than the limit 50",
    ),
    Hostile(
        "same-full-page-every-offset",
        handler=same_full_page,
        client={"page_size": 50},
        says="refusing to loop",
    ),
    Hostile(
        "endless-pages-hit-the-cap",
        handler=endless,
        client={"page_size": 10, "max_pages": 3},
        says="more than 3 pages",
    ),
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
        store_fetch(wh, "phala", DAYS, result, settings, "hostile-load")
    msg = str(err.value)
    assert msg.startswith("phala"), msg
    assert APP in msg, msg
    # the window: the request's span for the client, the record's day for the row audits
    assert (DAYS[0].isoformat() if case.audit else WINDOW) in msg, msg
    assert case.says in msg, msg
    assert snapshot(wh) == before


# -- tolerated answers: exactly the right rows -------------------------------------------------
def extra_record(b: Body) -> None:
    b["usage"].append({**b["usage"][0], "usage_type": "gpu", "billing_key": "gpu-1", "cost": 0.25})


def identical_copy(b: Body) -> None:
    b["usage"].append(copy.deepcopy(b["usage"][0]))


def late_stamp(b: Body) -> None:
    b["usage"][0]["timestamp"] = "2026-11-04T03:00:00Z"  # written later: tolerated reading


def hour_bucket_stamp(b: Body) -> None:
    # the other reading: timestamp is the record's hour bucket, a little before billing_start
    r = b["usage"][0]
    r["timestamp"] = r["billing_day"] + "T00:00:00Z"
    r["billing_start"] = r["billing_day"] + "T00:37:00Z"


def day_at_end_date(b: Body) -> None:
    # a server reading end_date as inclusive also answers the day that starts at it
    extra = copy.deepcopy(b["usage"][0])
    b["usage"].append(extra)
    moved_to("2026-11-03")({"usage": [extra]})


def float_noise(b: Body) -> None:
    # conforming `type: number` values with binary noise beyond the warehouse's 12 decimals
    b["usage"][0]["cost"] = 0.1 + 0.2  # 0.30000000000000004
    b["usage"][0]["duration_minutes"] = 59.99999999999999


def integral_floats(b: Body) -> None:
    # JSON Schema integers: 5001.0 and 5e2 are integers (json.dumps writes them as floats)
    b["usage"][0]["project_id"] = float(b["usage"][0]["project_id"])
    b["usage"][0]["team_id"] = float(b["usage"][0]["team_id"])
    b["total"] = 5e2


def day_before_start(b: Body) -> None:
    # start_date is asked a day early: that day's records are answered, and dropped
    extra = copy.deepcopy(b["usage"][0])
    b["usage"].append(extra)
    moved_to("2026-10-31")({"usage": [extra]})


TOLERATED = [
    Hostile("record-on-the-padded-day-before-start-is-dropped", day_before_start),
    Hostile("integral-floats-are-integers", integral_floats),
    Hostile("float-noise-is-rounded-to-12-decimals", float_noise),
    Hostile("record-on-the-day-starting-at-end-date-is-dropped", day_at_end_date),
    Hostile("timestamp-is-the-hour-bucket-before-billing-start", hour_bucket_stamp),
    Hostile("unknown-usage-type-is-kept", extra_record),
    Hostile("unknown-event-type-is-kept", on_record("event_type", "cvm_usage_v2")),
    Hostile("identical-duplicate-collapses", identical_copy),
    Hostile("details-null", on_record("details", None)),
    Hostile("details-empty-string-is-null", on_record("details", "")),
    Hostile("details-whitespace-is-null", on_record("details", " \n\t")),
    Hostile("total-counts-all-records", on_body("total", 99999)),  # the other reading of total
    Hostile("total-cost-disagrees", on_body("total_cost", 0)),  # not compared: INFERRED meaning
    Hostile("timestamp-later-than-the-period", late_stamp),
    Hostile("unknown-fields-ignored", on_record("region", "eu")),
]


def expected_rows(case_id: str) -> set[tuple]:
    recs = good_records()
    if case_id == "unknown-usage-type-is-kept":
        recs = [*recs, {**recs[0], "usage_type": "gpu", "billing_key": "gpu-1", "cost": 0.25}]
    if case_id == "float-noise-is-rounded-to-12-decimals":  # half-even at 12 decimals
        recs = [{**recs[0], "cost": "0.300000000000", "duration_minutes": "60.000000000000"}]
        recs += good_records()[1:]
    return {
        (
            r["billing_key"],
            r["usage_type"],
            date.fromisoformat(r["billing_day"]),
            Decimal(str(r["duration_minutes"])),
            Decimal(str(r["cost"])),
        )
        for r in recs
    }


@pytest.mark.parametrize("case", TOLERATED, ids=[c.id for c in TOLERATED])
def test_tolerated_answer_writes_exactly_the_right_rows(
    case: Hostile, loaded: tuple[Warehouse, UsageSettings]
) -> None:
    wh, settings = loaded
    store_fetch(wh, "phala", DAYS, fetch(case.answer()), settings, "second-load")
    t = provider_usage
    with wh.engine.connect() as conn:
        usage = conn.execute(
            select(t.c.source_key, t.c.metric, t.c.usage_date, t.c.raw_quantity, t.c.billed_cost)
        ).all()
        cov = conn.execute(
            select(
                provider_coverage.c.account_id,
                provider_coverage.c.usage_date,
                provider_coverage.c.status,
                provider_coverage.c.row_count,
            )
        ).all()
    want = expected_rows(case.id)
    got = {(k, m, d, Decimal(q), Decimal(c)) for k, m, d, q, c in usage}
    assert got == want and len(usage) == len(want)
    per_day = {d: sum(1 for w in want if w[2] == d) for d in DAYS}
    assert sorted(cov) == sorted((APP, d, "complete", per_day[d]) for d in DAYS)


@pytest.mark.parametrize("exclusive", [False, True], ids=["inclusive-start", "exclusive-start"])
def test_either_reading_of_start_date_yields_every_record_of_the_first_day(
    exclusive: bool,
) -> None:
    """A server may read start_date as exclusive (billing_start > start_date): the first
    day's 00:00 records must still arrive, so the request starts a day early."""
    pool = [r for d in [date(2026, 10, 31), *DAYS] for r in phala_records(7, APP, d)]
    first = [r for r in good_records() if r["billing_day"] == DAYS[0].isoformat()]
    assert any(r["billing_start"].endswith("T00:00:00Z") for r in first)  # the case at stake

    def handle(req: httpx.Request) -> httpx.Response:
        since = req.url.params["start_date"]
        until = req.url.params["end_date"]
        kept = [
            r
            for r in pool
            if (r["billing_start"] > since if exclusive else r["billing_start"] >= since)
            and r["billing_start"] < until
        ]
        limit, offset = int(req.url.params["limit"]), int(req.url.params["offset"])
        return httpx.Response(200, json=page_of(kept[offset : offset + limit]))

    result = fetch(handle)
    assert {r.source_key for r in result.rows} == {r["billing_key"] for r in good_records()}
    assert {c.usage_date: c.row_count for c in result.coverage} == {
        d: sum(1 for r in good_records() if r["billing_day"] == d.isoformat()) for d in DAYS
    }
