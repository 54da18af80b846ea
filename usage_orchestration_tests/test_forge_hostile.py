"""Hostile Forge answers, one test id each. After a first good load of the same app and days,
every answer either fails with a clear error (naming forge, the app, and the resource and
interval or the day) and leaves provider_usage and provider_coverage as they were, or loads the
exact correct rows. None may be written as wrong data or as silent zero usage."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from usage_orchestration.providers.forge import FLAT, GROUPED, ForgeClient
from usage_orchestration.providers.http import ProviderError, RetryPolicy
from usage_orchestration.sandbox.core import json_response
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.settings.forge import ForgeApp
from usage_orchestration.warehouse.audit import AuditError
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse

APP = "ari:cloud:ecosystem::app/hostile-1"
RESOURCE = "FUNCTION_COMPUTE"
DAYS = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
INTERVAL = "2026-03-01..2026-03-03"
TODAY = date(2026, 3, 20)
VALUES = ["1.500000", "2.250000", "3.125000"]
ENVS = ["env-prod", "env-stage"]
GOOD_FLAT = [(d, None, Decimal(v)) for d, v in zip(DAYS, VALUES, strict=True)]
GOOD_GROUPED = [(d, e, Decimal(v)) for d, v in zip(DAYS, VALUES, strict=True) for e in ENVS]

Body = Callable[[int], Any]  # page number -> the JSON answer (or bytes: not JSON)


def flat_items() -> list[dict[str, Any]]:
    return [
        {
            "period": d.isoformat(),
            "resolution": "ONE_DAY",
            "tokensConsumed": v,
            "tokenUnit": "GB-seconds",
        }
        for d, v in zip(DAYS, VALUES, strict=True)
    ]


def grouped_items() -> list[dict[str, Any]]:
    return [
        {
            "period": d.isoformat(),
            "resolution": "ONE_DAY",
            "groups": [
                {
                    "groupBy": "ENVIRONMENT_ID",
                    "groupValue": e,
                    "tokensConsumed": v,
                    "tokenUnit": "GB-seconds",
                }
                for e in ENVS
            ],
        }
        for d, v in zip(DAYS, VALUES, strict=True)
    ]


def node(
    items: Any, *, grouped: bool = False, page: int = 1, page_size: int = 100
) -> dict[str, Any]:
    return {
        "__typename": GROUPED if grouped else FLAT,
        ("groupedUsage" if grouped else "flatUsage"): items,
        "pagination": {"page": page, "pageSize": page_size},
        "error": None,
    }


def envelope(n: Any) -> dict[str, Any]:
    return {"data": {"ecosystem": {"devConsole": {"appResourceUsage": n}}}}


def paged(items: list[dict[str, Any]], *, grouped: bool = False) -> Body:
    """A well-behaved server: everything on page 1, empty afterwards."""
    return lambda page: envelope(node(items if page == 1 else [], grouped=grouped, page=page))


def one_page(mutate: Callable[[dict[str, Any]], Any], *, grouped: bool = False) -> Body:
    """The good page-1 answer passed through ``mutate`` (which edits the envelope in place or
    returns a replacement)."""

    def body(page: int) -> Any:
        answer = paged(grouped_items() if grouped else flat_items(), grouped=grouped)(page)
        out = mutate(answer)
        return answer if out is None else out

    return body


def usage_node(answer: dict[str, Any]) -> dict[str, Any]:
    return answer["data"]["ecosystem"]["devConsole"]["appResourceUsage"]


def first_item(answer: dict[str, Any]) -> dict[str, Any]:
    n = usage_node(answer)
    return (n.get("flatUsage") or n.get("groupedUsage"))[0]


def first_group(answer: dict[str, Any]) -> dict[str, Any]:
    return first_item(answer)["groups"][0]


def setter(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Callable:
    def mutate(answer: dict[str, Any]) -> None:
        path(answer)[key] = value

    return mutate


def deleter(path: Callable[[dict[str, Any]], dict[str, Any]], key: str) -> Callable:
    def mutate(answer: dict[str, Any]) -> None:
        del path(answer)[key]

    return mutate


@dataclass
class Case:
    body: Body
    error: str | None = None  # a part of the expected error message
    rows: list[tuple] | None = None  # else the exact rows loaded
    grouped: bool = False
    max_pages: int = 100


def _same_full_page(page: int) -> Any:
    return envelope(node(flat_items(), page=page, page_size=3))


def _new_group_every_page(page: int) -> Any:
    items = grouped_items()
    for item in items:
        for g in item["groups"]:
            g["groupValue"] = f"{g['groupValue']}-{page}"
    return envelope(node(items, grouped=True, page=page, page_size=3))


def _duplicate(value: str, period: str = "2026-03-01") -> Body:
    extra = {
        "period": period,
        "resolution": "ONE_DAY",
        "tokensConsumed": value,
        "tokenUnit": "GB-seconds",
    }
    return paged([*flat_items(), extra])


def _split_day_over_pages(page: int) -> Any:
    """The "rows" reading of pageSize: 6 rows, 4 a page, the second day split."""
    rows = [(i, g) for i in grouped_items() for g in i["groups"]][(page - 1) * 4 : page * 4]
    items: list[dict[str, Any]] = []
    for item, g in rows:
        if not items or items[-1]["period"] != item["period"]:
            items.append({**item, "groups": []})
        items[-1]["groups"].append(g)
    return envelope(node(items, grouped=True, page=page, page_size=4))


OUT_OF_RANGE = {"message": "page out of range", "extensions": {"statusCode": 400}}


def _short_by_periods_then(past_end: Callable[[int], Any], *, page_size: int = 4) -> Body:
    """All 6 rows on page 1: 3 periods (short of ``page_size``) but 6 rows (full), so page 2
    is asked for only in case ``pageSize`` counts rows; ``past_end`` answers it."""
    first = envelope(node(grouped_items(), grouped=True, page_size=page_size))
    return lambda page: first if page == 1 else past_end(page)


def _full_by_both_then(past_end: Callable[[int], Any]) -> Body:
    """3 periods of 3 on page 1: full by either count, so page 2 is owed."""
    first = envelope(node(flat_items(), page_size=3))
    return lambda page: first if page == 1 else past_end(page)


def _inband_out_of_range(page: int) -> Any:
    return envelope({"resourceUsage": None, "pagination": None, "error": OUT_OF_RANGE})


def _repeat_grouped(page: int) -> Any:
    return envelope(node(grouped_items(), grouped=True, page=page, page_size=4))


def _no_typename(answer: dict[str, Any]) -> dict[str, Any]:
    n = usage_node(answer)
    del n["__typename"]
    n["resourceUsage"] = n.pop("groupedUsage")
    return answer


def _unaliased(answer: dict[str, Any]) -> None:
    n = usage_node(answer)
    n["resourceUsage"] = n.pop("flatUsage")


HUGE = "1" + "0" * 27 + ".000000"  # 28 integer digits: beyond NUMERIC(38, 12)

CASES: dict[str, Case] = {
    # wrong types
    "tokens-bool": Case(one_page(setter(first_item, "tokensConsumed", True)), "tokensConsumed"),
    "tokens-object": Case(
        one_page(setter(first_item, "tokensConsumed", {"v": "1"})), "tokensConsumed"
    ),
    "tokens-text": Case(one_page(setter(first_item, "tokensConsumed", "lots")), "tokensConsumed"),
    "tokens-null": Case(one_page(setter(first_item, "tokensConsumed", None)), "tokensConsumed"),
    "tokens-json-float": Case(
        lambda p: envelope(
            node(
                [{**i, "tokensConsumed": float(i["tokensConsumed"])} for i in flat_items()]
                if p == 1
                else [],
                page=p,
            )
        ),
        rows=GOOD_FLAT,
    ),
    "period-number": Case(one_page(setter(first_item, "period", 20260301)), "period"),
    "period-not-a-date": Case(one_page(setter(first_item, "period", "2026-02-30")), "period"),
    "unit-number": Case(one_page(setter(first_item, "tokenUnit", 7)), "tokenUnit"),
    "list-is-object": Case(
        one_page(setter(usage_node, "flatUsage", {"period": "2026-03-01"})), "flatUsage"
    ),
    "page-is-text": Case(
        one_page(setter(lambda a: usage_node(a)["pagination"], "page", "1")), "page"
    ),
    # missing fields
    "missing-token-unit": Case(one_page(deleter(first_item, "tokenUnit")), "tokenUnit"),
    "empty-token-unit": Case(one_page(setter(first_item, "tokenUnit", "")), "tokenUnit"),
    "missing-period": Case(one_page(deleter(first_item, "period")), "period"),
    "missing-tokens": Case(one_page(deleter(first_item, "tokensConsumed")), "tokensConsumed"),
    "missing-groups": Case(
        one_page(deleter(first_item, "groups"), grouped=True), "groups", grouped=True
    ),
    "missing-group-value": Case(
        one_page(deleter(first_group, "groupValue"), grouped=True), "groupValue", grouped=True
    ),
    "empty-group-value": Case(
        one_page(setter(first_group, "groupValue", ""), grouped=True), "groupValue", grouped=True
    ),
    "null-group-value": Case(
        one_page(setter(first_group, "groupValue", None), grouped=True), "groupValue", grouped=True
    ),
    "missing-pagination": Case(one_page(deleter(usage_node, "pagination")), "no pagination"),
    "null-pagination": Case(one_page(setter(usage_node, "pagination", None)), "no pagination"),
    "missing-page-size": Case(
        one_page(deleter(lambda a: usage_node(a)["pagination"], "pageSize")), "pageSize"
    ),
    "page-size-zero": Case(
        one_page(setter(lambda a: usage_node(a)["pagination"], "pageSize", 0)), "pageSize"
    ),
    "page-size-negative": Case(
        one_page(setter(lambda a: usage_node(a)["pagination"], "pageSize", -5)), "pageSize"
    ),
    # the list absent or null: never zero usage
    "null-list": Case(one_page(setter(usage_node, "flatUsage", None)), "no usage list"),
    "absent-list": Case(one_page(deleter(usage_node, "flatUsage")), "no usage list"),
    "null-list-under-both-names": Case(
        one_page(lambda a: usage_node(a).update(flatUsage=None, resourceUsage=None)),
        "no usage list",
    ),
    "null-node": Case(lambda _p: envelope(None), "no appResourceUsage object"),
    "empty-answer": Case(lambda _p: {}, "no appResourceUsage object"),
    "data-null": Case(lambda _p: {"data": None}, "no appResourceUsage object"),
    "data-null-empty-errors": Case(
        lambda _p: {"data": None, "errors": []}, "no appResourceUsage object"
    ),
    "ecosystem-null": Case(lambda _p: {"data": {"ecosystem": None}}, "no appResourceUsage object"),
    "not-json": Case(lambda _p: b"<html>gateway</html>", "not JSON"),
    "unknown-typename": Case(
        one_page(setter(usage_node, "__typename", "DevConsoleOther")), "__typename"
    ),
    "flat-answer-to-grouped-request": Case(
        paged(flat_items()), "got the flat fragment", grouped=True
    ),
    # values the warehouse must not hold (client refusal or row audit)
    "tokens-negative": Case(
        one_page(setter(first_item, "tokensConsumed", "-1.000000")), "tokensConsumed"
    ),
    "tokens-nan": Case(one_page(setter(first_item, "tokensConsumed", "NaN")), "tokensConsumed"),
    "tokens-infinity": Case(
        one_page(setter(first_item, "tokensConsumed", "Infinity")), "tokensConsumed"
    ),
    "tokens-huge": Case(
        one_page(setter(first_item, "tokensConsumed", HUGE)), "more than 26 digits"
    ),
    # periods that do not name one requested day
    "period-out-of-window": Case(
        one_page(setter(first_item, "period", "2026-02-27")), "outside the requested"
    ),
    "period-not-midnight": Case(
        one_page(setter(first_item, "period", "2026-03-01T06:00:00Z")), "not midnight UTC"
    ),
    "period-midnight-other-zone": Case(
        one_page(setter(first_item, "period", "2026-03-01T00:00:00+02:00")), "not midnight UTC"
    ),
    "period-midnight-utc-datetime": Case(
        one_page(setter(first_item, "period", "2026-03-01T00:00:00Z")), rows=GOOD_FLAT
    ),
    "resolution-hourly": Case(one_page(setter(first_item, "resolution", "ONE_HOUR")), "resolution"),
    # paging
    "page-number-mismatch": Case(
        one_page(setter(lambda a: usage_node(a)["pagination"], "page", 7)),
        "asked for page 1, got page 7",
    ),
    "same-full-page-every-page": Case(_same_full_page, "repeats periods of earlier pages"),
    "endless-new-groups": Case(
        _new_group_every_page, "more than 5 pages", grouped=True, max_pages=5
    ),
    "day-split-over-pages": Case(_split_day_over_pages, rows=GOOD_GROUPED, grouped=True),
    # a probe page (the last was short by periods, full by rows) refused or repeated: the end
    "probe-page-inband-out-of-range": Case(
        _short_by_periods_then(_inband_out_of_range), rows=GOOD_GROUPED, grouped=True
    ),
    "probe-page-errors-out-of-range": Case(
        _short_by_periods_then(lambda _p: {"data": None, "errors": [OUT_OF_RANGE]}),
        rows=GOOD_GROUPED,
        grouped=True,
    ),
    "probe-page-repeats-last-page": Case(
        _short_by_periods_then(_repeat_grouped), rows=GOOD_GROUPED, grouped=True
    ),
    "probe-page-repeats-last-page-as-page-1": Case(
        _short_by_periods_then(
            lambda _p: envelope(node(grouped_items(), grouped=True, page_size=4))
        ),
        rows=GOOD_GROUPED,
        grouped=True,
    ),
    "probe-page-rate-limited-is-no-end": Case(
        _short_by_periods_then(
            lambda _p: {
                "data": None,
                "errors": [{"message": "slow", "extensions": {"statusCode": 429}}],
            }
        ),
        "gave up",
        grouped=True,
    ),
    # the page was full by both counts: page 2 is owed, so refusing or repeating it is an error
    "full-page-then-out-of-range": Case(
        _full_by_both_then(_inband_out_of_range), "page out of range"
    ),
    "full-page-then-repeated": Case(
        _full_by_both_then(lambda p: envelope(node(flat_items(), page=p, page_size=3))),
        "repeats periods of earlier pages",
    ),
    # duplicates
    "duplicate-conflicting": Case(_duplicate("9.000000"), "reported twice"),
    "duplicate-conflicting-datetime-spelling": Case(
        _duplicate("9.000000", "2026-03-01T00:00:00Z"), "reported twice"
    ),
    "duplicate-identical": Case(_duplicate("1.500000"), rows=GOOD_FLAT),
    # readings the contract leaves open: the exact rows
    "list-under-field-name": Case(one_page(_unaliased), rows=GOOD_FLAT),
    "no-typename-grouped": Case(
        one_page(_no_typename, grouped=True), rows=GOOD_GROUPED, grouped=True
    ),
    "bare-envelope": Case(lambda p: node(flat_items() if p == 1 else [], page=p), rows=GOOD_FLAT),
}


def _client(body: Body, max_pages: int = 100) -> ForgeClient:
    def handle(req: httpx.Request) -> httpx.Response:
        answer = body(json.loads(req.content)["variables"]["filters"]["page"])
        if isinstance(answer, bytes):
            return httpx.Response(200, content=answer, headers={"Content-Type": "application/json"})
        return json_response(200, copy.deepcopy(answer))

    return ForgeClient(
        "http://forge.test/graphql",
        "e@x",
        "tok",
        experimental_api="v",
        account_id="acct",
        transport=httpx.MockTransport(handle),
        today=lambda: TODAY,
        max_pages=max_pages,
        retry=RetryPolicy(max_attempts=1),
    )


def _tables(url: str) -> tuple[list[tuple], list[tuple]]:
    skip = ("load_id", "fetched_at")
    with Warehouse(url).engine.connect() as conn:
        usage = conn.execute(select(*[c for c in provider_usage.c if c.name not in skip])).all()
        cover = conn.execute(select(*[c for c in provider_coverage.c if c.name not in skip])).all()
    return sorted(map(tuple, usage), key=str), sorted(map(tuple, cover), key=str)


def _load(url: str, settings: UsageSettings, client: ForgeClient, load_id: str) -> None:
    with client:
        result = client.fetch_days(settings.forge.apps, DAYS)
    store_fetch(Warehouse(url), "forge", DAYS, result, settings, load_id)


@pytest.mark.parametrize("case", [pytest.param(c, id=k) for k, c in CASES.items()])
def test_hostile_answer_fails_loudly_or_loads_exact_rows(db_url: str, case: Case) -> None:
    app = ForgeApp(app_id=APP, group_by="ENVIRONMENT_ID" if case.grouped else None)
    settings = load_settings(warehouse_url=db_url, forge={"apps": [app.model_dump()]})
    good = grouped_items() if case.grouped else flat_items()
    _load(db_url, settings, _client(paged(good, grouped=case.grouped)), "load-good")
    before = _tables(db_url)
    assert len(before[0]) == (6 if case.grouped else 3) and len(before[1]) == 3

    hostile = _client(case.body, case.max_pages)
    if case.error is not None:
        with pytest.raises((ProviderError, AuditError)) as err:
            _load(db_url, settings, hostile, "load-hostile")
        msg = str(err.value)
        assert case.error in msg, msg
        assert "forge" in msg and APP in msg, msg
        if isinstance(err.value, ProviderError):
            assert RESOURCE in msg and INTERVAL in msg, msg
        else:
            assert any(d.isoformat() in msg for d in DAYS), msg
        assert _tables(db_url) == before  # nothing written
        return
    _load(db_url, settings, hostile, "load-hostile")
    _, cover = _tables(db_url)
    loaded = sorted(
        (
            (r.usage_date, r.sub_account_id, Decimal(str(r.consumed_quantity)))
            for r in _rows(db_url)
        ),
        key=str,
    )
    assert loaded == sorted(case.rows or [], key=str)
    assert cover == before[1]  # every day complete, as in the good load


def _rows(url: str) -> list[Any]:
    with Warehouse(url).engine.connect() as conn:
        return conn.execute(
            select(
                provider_usage.c.usage_date,
                provider_usage.c.sub_account_id,
                provider_usage.c.consumed_quantity,
            )
        ).all()


def test_the_good_load_is_what_the_answer_said(db_url: str) -> None:
    """The baseline the table compares against: all days complete with the answered values."""
    settings = load_settings(warehouse_url=db_url, forge={"apps": [{"app_id": APP}]})
    _load(db_url, settings, _client(paged(flat_items())), "load-good")
    loaded = sorted(
        (
            (r.usage_date, r.sub_account_id, Decimal(str(r.consumed_quantity)))
            for r in _rows(db_url)
        ),
        key=str,
    )
    assert loaded == sorted(GOOD_FLAT, key=str)
    _, cover = _tables(db_url)
    assert len(cover) == 3 and all("complete" in row for row in cover)
