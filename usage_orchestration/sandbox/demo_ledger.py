"""The demo credit ledger: what the platform would have recorded for the sandbox providers' usage.

``seed_demo_ledger`` creates the ledger schema (``ledger/schema.py``), wipes it and writes, in
one transaction: the resource-type registry, the demo entities, ``usage_event`` rows derived from
what the sandbox providers report (every enabled provider module among
``usage_orchestration.sandbox.{phala,neon,forge}`` that has ``demo_usage(seed, settings, day)``),
per-month budgets and credit pool, and a License Manager sync row.

Usage is mapped with the configured mappings and rate card (ledger quantity × credits per unit),
then each (day, entity, resource type) total is split into several events spread over the day.
Deliberate breaks, all in the month of the last seeded day (the demo's current month):

- ``ledger_under``: one entity/day recorded ~30 % short (quantity and credits): a revenue leak;
- ``missing_in_ledger``: one day on which a mapped entity has no events at all;
- ``missing_at_provider``: ledger-only usage for an (entity, resource type) no provider reports;
- budgets: Support Bot is above 100 % of its monthly budget in the current month; every other
  entity stays under its budget, month to date and by run-rate forecast.

Deterministic for (seed, days). The summary returned names every break and the budgets.
"""

from __future__ import annotations

import calendar
import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy import delete

from usage_orchestration.core.mapping import MappingError, resolve_mapping, to_ledger_quantity
from usage_orchestration.ledger.schema import (
    RESOURCE_TYPES,
    credit_pool,
    entity,
    entity_budget,
    ledger_metadata,
    license_sync,
    resource_type,
    usage_event,
)
from usage_orchestration.sandbox import forge as forge_sandbox
from usage_orchestration.sandbox import neon as neon_sandbox
from usage_orchestration.sandbox import phala as phala_sandbox
from usage_orchestration.sandbox.data import rng
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.store import make_engine

SALES_DASHBOARD = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
SUPPORT_BOT = "bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb"
ANALYTICS_WAREHOUSE = "cccccccc-cccc-cccc-cccc-cccccccccccc"
JIRA_INSIGHTS = "dddddddd-dddd-dddd-dddd-dddddddddddd"

# id, type, name, slug, owner (a mapping naming the entity decides its type)
DEMO_ENTITIES: list[tuple[str, str, str, str, str]] = [
    (SALES_DASHBOARD, "app", "Sales Dashboard", "sales-dashboard", "jdoe"),
    (SUPPORT_BOT, "app", "Support Bot", "support-bot", "asmith"),
    (ANALYTICS_WAREHOUSE, "workspace", "Analytics Warehouse", "analytics-warehouse", "mlee"),
    (JIRA_INSIGHTS, "app", "Jira Insights", "jira-insights", "rkumar"),
]

UNDER_FACTOR = Decimal("0.7")  # ledger_under: 30 % of the day's usage not charged
OVERRUN_FACTOR = Decimal("0.8")  # the overrunning entity's budget: 80 % of its month to date
HEADROOM = Decimal("1.3")  # everyone else: 130 % of their run-rate forecast
POOL_HEADROOM = Decimal("1.5")
SCALE = Decimal("0.000001")
BIG_QUANTITY = Decimal(1_000_000)

DemoUsage = Callable[[int, UsageSettings, date], list[Any]]
# What each provider's sandbox reports for the configured accounts on a day.
DEMO_USAGE: dict[str, DemoUsage] = {
    "phala": phala_sandbox.demo_usage,
    "neon": neon_sandbox.demo_usage,
    "forge": forge_sandbox.demo_usage,
}


def _provider_sources(settings: UsageSettings) -> tuple[dict[str, DemoUsage], dict[str, str]]:
    """demo_usage per enabled provider (its sandbox's own data); and why the others are skipped."""
    sources: dict[str, DemoUsage] = {}
    skipped: dict[str, str] = {}
    for name, fn in DEMO_USAGE.items():
        if getattr(settings, name).enabled:
            sources[name] = fn
        else:
            skipped[name] = "disabled in settings"
    return sources, skipped


Key = tuple[date, str, str, str]  # (day, entity_id, entity_type, resource_type)


def _provider_totals(
    settings: UsageSettings, days: list[date], seed: int, sources: dict[str, DemoUsage]
) -> tuple[dict[Key, Decimal], dict[Key, set[str]]]:
    """Ledger-unit quantity per (day, entity, resource type) of the mapped provider usage."""
    totals: dict[Key, Decimal] = defaultdict(Decimal)
    providers: dict[Key, set[str]] = defaultdict(set)
    wanted = set(days)
    for provider, demo_usage in sources.items():
        for day in days:
            for row in demo_usage(seed, settings, day):
                if row.usage_date not in wanted:
                    continue
                m = resolve_mapping(
                    settings.mappings, row.provider, row.resource_id, row.metric, row.sub_account_id
                )
                if m is None:
                    continue  # unmapped usage: the platform never charged it
                try:
                    qty = to_ledger_quantity(
                        settings.rate_card,
                        m.resource_type,
                        row.consumed_quantity,
                        row.consumed_unit,
                    )
                except MappingError as exc:
                    raise MappingError(
                        f"demo ledger: {row.provider} {row.resource_id} {row.metric} on "
                        f"{row.usage_date}: {exc}"
                    ) from None
                key = (row.usage_date, m.entity_id, m.entity_type, m.resource_type)
                totals[key] += qty
                providers[key].add(provider)
    return dict(totals), dict(providers)


def _split(total: Decimal, n: int, r: Any) -> list[Decimal]:
    """``total`` in ``n`` random parts (at SCALE, whole units for large totals) that add up
    exactly."""
    if n <= 1 or total == 0:
        return [total]
    step = Decimal(1) if abs(total) >= BIG_QUANTITY else SCALE
    weights = [Decimal(r.randint(1, 100)) for _ in range(n)]
    wsum = sum(weights, Decimal(0))
    parts = [(total * w / wsum).quantize(step, rounding=ROUND_DOWN) for w in weights[:-1]]
    parts.append(total - sum(parts, Decimal(0)))
    return parts


def _round_up(x: Decimal, step: int) -> Decimal:
    return max(Decimal(step), (x / step).to_integral_value(ROUND_CEILING) * step)


def _overrun_budget(used: Decimal) -> Decimal:
    """A round budget below ``used``: 80 % of it floored to its leading digit (to tens at
    most), so the overrun shows even on a month's first day, when little is used yet."""
    target = used * OVERRUN_FACTOR
    step = Decimal(10) ** min(1, target.adjusted())
    return (target / step).to_integral_value(ROUND_FLOOR) * step


def _month(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def seed_demo_ledger(
    ledger_url: str,
    settings: UsageSettings,
    days: list[date],
    seed: int,
    *,
    sync_failure: str | None = None,
) -> dict[str, Any]:
    """(Re)create the demo ledger at ``ledger_url`` for ``days``; return a summary of what was
    written (events, breaks, budgets, pool). ``sync_failure`` (e.g. ``"lm_unreachable"``) records
    a failed License Manager sync after the last successful one."""
    days = sorted(set(days))
    if not days:
        raise ValueError("demo ledger: no days to seed")
    sources, skipped = _provider_sources(settings)
    totals, key_providers = _provider_totals(settings, days, seed, sources)
    entities = _demo_entities(settings)
    current = _month(days[-1])  # the breaks and the overrun are in the month of the last day
    ledger, breaks, orphan_key = _plant_breaks(
        settings, [d for d in days if _month(d) == current], totals, key_providers, entities, seed
    )
    events, credits_by_key = _ledger_events(
        settings, ledger, key_providers, entities, orphan_key, seed
    )
    mtd, budgets, pools = _budgets_and_pools(days, entities, credits_by_key, current)
    sync_row = _sync_row(days[-1], sync_failure)
    _write_ledger(ledger_url, entities, events, budgets, pools, sync_row)
    over = [
        {
            "entity_id": eid,
            "month": current,
            "credits": mtd[(current, eid)],
            "budget": budgets[current][eid],
        }
        for eid in sorted(entities)
        if mtd.get((current, eid), Decimal(0)) > budgets[current][eid]
    ]
    return {
        "first_day": days[0],
        "last_day": days[-1],
        "days": len(days),
        "events": len(events),
        "credits_total": sum(credits_by_key.values(), Decimal(0)),
        "providers": sorted(sources),
        "skipped_providers": skipped,
        "entities": sorted(entities),
        "breaks": breaks,
        "budgets": budgets,
        "over_budget": over,
        "credit_pool": pools,
        "sync": sync_row,
    }


def _demo_entities(settings: UsageSettings) -> dict[str, dict[str, Any]]:
    """The demo four, plus any entity a mapping names (a mapping decides the type)."""
    mapped_types = {m.entity_id: m.entity_type for m in settings.mappings}
    entities: dict[str, dict[str, Any]] = {}
    for eid, etype, name, slug, owner in DEMO_ENTITIES:
        entities[eid] = {
            "id": eid,
            "entity_type": mapped_types.get(eid, etype),
            "name": name,
            "slug": slug,
            "owner_id": owner,
        }
    for eid, etype in sorted(mapped_types.items()):
        entities.setdefault(
            eid, {"id": eid, "entity_type": etype, "name": eid, "slug": eid, "owner_id": None}
        )
    return entities


def _pick(
    totals: Mapping[Key, Decimal], day: date, prefer: list[str], exclude: set[Key]
) -> Key | None:
    """A key of ``day`` with usage, of the first preferred entity that has one."""
    on_day = sorted(k for k in totals if k[0] == day and k not in exclude)
    for eid in prefer:
        for k in on_day:
            if k[1] == eid:
                return k
    return on_day[0] if on_day else None


def _break(kind: str, key: Key, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "day": key[0], "entity_id": key[1], "resource_type": key[3], **extra}


def _orphan_key(
    settings: UsageSettings, entities: Mapping[str, dict[str, Any]], day: date
) -> Key | None:
    """Ledger-only usage: an (entity, resource type) of the rate card that no mapping produces."""
    mapped_pairs = {(m.entity_id, m.resource_type) for m in settings.mappings}
    for eid in (ANALYTICS_WAREHOUSE, JIRA_INSIGHTS, SALES_DASHBOARD, SUPPORT_BOT):
        for rt in sorted(settings.rate_card):
            if (eid, rt) not in mapped_pairs:
                return (day, eid, entities[eid]["entity_type"], rt)
    return None


def _plant_breaks(
    settings: UsageSettings,
    month_days: list[date],
    totals: Mapping[Key, Decimal],
    key_providers: dict[Key, set[str]],
    entities: Mapping[str, dict[str, Any]],
    seed: int,
) -> tuple[dict[Key, Decimal], list[dict[str, Any]], Key | None]:
    """The ledger's quantities: the providers' totals with three breaks planted in the current
    month (a ledger_under, a missing_in_ledger, a missing_at_provider). Returns the quantities,
    the breaks and the ledger-only key (``key_providers`` gains it as ``manual``)."""
    breaks: list[dict[str, Any]] = []
    under_key = _pick(totals, month_days[len(month_days) // 2], [SALES_DASHBOARD], set())
    if under_key is not None:
        breaks.append(_break("ledger_under", under_key, factor=UNDER_FACTOR))
    missing_key = _pick(
        totals,
        month_days[len(month_days) // 3],
        [SUPPORT_BOT, SALES_DASHBOARD],
        {under_key} if under_key else set(),
    )
    if missing_key is not None:
        breaks.append(_break("missing_in_ledger", missing_key))
    orphan_day = month_days[(2 * len(month_days)) // 3]
    orphan_key = _orphan_key(settings, entities, orphan_day)
    ledger: dict[Key, Decimal] = {}
    for k, qty in totals.items():
        if k == missing_key:
            continue
        ledger[k] = qty * UNDER_FACTOR if k == under_key else qty
    if orphan_key is not None:
        r = rng(seed, "demo-ledger-orphan", orphan_day)
        ledger[orphan_key] = Decimal(r.randint(1800, 7200))
        key_providers[orphan_key] = {"manual"}
        breaks.append(_break("missing_at_provider", orphan_key))
    return ledger, breaks, orphan_key


def _ledger_events(
    settings: UsageSettings,
    ledger: Mapping[Key, Decimal],
    key_providers: Mapping[Key, set[str]],
    entities: Mapping[str, dict[str, Any]],
    orphan_key: Key | None,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[Key, Decimal]]:
    """Each (day, entity, resource type) split into several events over the day; and the
    credits recorded per key."""
    events: list[dict[str, Any]] = []
    credits_by_key: dict[Key, Decimal] = {}
    for k in sorted(ledger):
        day, eid, etype, rt = k
        card = settings.rate_card[rt]
        # Large quantities (bytes) are recorded in whole units, as a meter would: integer sums
        # are exact on every database (SQLite sums fractions as binary floating point).
        qty = ledger[k].quantize(Decimal(1) if abs(ledger[k]) >= BIG_QUANTITY else SCALE)
        credits = (qty * card.credits_per_unit).quantize(SCALE)
        credits_by_key[k] = credits
        r = rng(seed, "demo-ledger", day, eid, rt)
        n = r.randint(4, 12)
        q_parts = _split(qty, n, r)
        c_parts = [
            (p * card.credits_per_unit).quantize(SCALE, rounding=ROUND_DOWN) for p in q_parts[:-1]
        ]
        c_parts.append(credits - sum(c_parts, Decimal(0)))
        seconds = sorted(r.randrange(0, 86_400) for _ in q_parts)
        start = datetime.combine(day, time(0), tzinfo=UTC)
        source = ",".join(sorted(key_providers.get(k, {"manual"})))
        if k == orphan_key:  # recorded by hand, with no provider behind it
            actor, actor_type = entities[eid]["owner_id"] or "ops", "user"
        else:
            actor, actor_type = f"{source.split(',')[0]}-metering", "service"
        for s, qp, cp in zip(seconds, q_parts, c_parts, strict=True):
            events.append(
                {
                    "occurred_at": start + timedelta(seconds=s),
                    "actor": actor,
                    "actor_type": actor_type,
                    "entity_id": eid,
                    "entity_type": etype,
                    "resource_type": rt,
                    "quantity": qp,
                    "unit": card.ledger_unit,
                    "credits": cp,
                    "metadata": json.dumps({"source": source, "demo": True}, sort_keys=True),
                }
            )
    return events, credits_by_key


def _budgets_and_pools(
    days: list[date],
    entities: Mapping[str, dict[str, Any]],
    credits_by_key: Mapping[Key, Decimal],
    current: str,
) -> tuple[dict[tuple[str, str], Decimal], dict[str, dict[str, Decimal]], dict[str, Decimal]]:
    """Budgets and pool per month, from the credits actually recorded: one entity overruns its
    current month's budget, everyone else has headroom. Also returns month to date per
    (month, entity)."""
    mtd: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (day, eid, _t, _rt), c in credits_by_key.items():
        mtd[(_month(day), eid)] += c
    overrun_eid = (
        SUPPORT_BOT
        if mtd.get((current, SUPPORT_BOT), 0) > 0
        else max((eid for eid in entities), key=lambda e: (mtd.get((current, e), Decimal(0)), e))
    )
    budgets: dict[str, dict[str, Decimal]] = {}
    pools: dict[str, Decimal] = {}
    for month in sorted({_month(d) for d in days}):
        y, mo = int(month[:4]), int(month[5:])
        seeded = [d for d in days if _month(d) == month]
        dim = calendar.monthrange(y, mo)[1]
        budgets[month] = {}
        projected_total = Decimal(0)
        for eid in entities:
            used = mtd.get((month, eid), Decimal(0))
            projected = used / len(seeded) * dim
            projected_total += projected
            if month == current and eid == overrun_eid and used > 0:
                budget = _overrun_budget(used)
            else:
                budget = _round_up(projected * HEADROOM, 100)
            budgets[month][eid] = budget
        pools[month] = _round_up(projected_total * POOL_HEADROOM, 1000)
    return mtd, budgets, pools


def _sync_row(last: date, sync_failure: str | None) -> dict[str, Any]:
    """The License Manager synced the evening of the last day (and failed after, if asked)."""
    sync_row: dict[str, Any] = {
        "synced_at": datetime.combine(last, time(23, 0), tzinfo=UTC),
        "last_sync_failed_at": None,
        "last_sync_failure_code": None,
        "staleness_level": None,
    }
    if sync_failure is not None:
        sync_row.update(
            last_sync_failed_at=datetime.combine(last, time(23, 30), tzinfo=UTC),
            last_sync_failure_code=sync_failure,
            staleness_level="stale",
        )
    return sync_row


def _write_ledger(
    ledger_url: str,
    entities: Mapping[str, dict[str, Any]],
    events: list[dict[str, Any]],
    budgets: Mapping[str, Mapping[str, Decimal]],
    pools: Mapping[str, Decimal],
    sync_row: dict[str, Any],
) -> None:
    """Replace the whole ledger's content in one transaction."""
    engine = make_engine(ledger_url)
    try:
        ledger_metadata.create_all(engine, checkfirst=True)
        with engine.begin() as conn:
            for table in (
                usage_event,
                entity_budget,
                credit_pool,
                license_sync,
                entity,
                resource_type,
            ):
                conn.execute(delete(table))
            conn.execute(resource_type.insert(), RESOURCE_TYPES)
            conn.execute(entity.insert(), list(entities.values()))
            for i in range(0, len(events), 5000):
                conn.execute(usage_event.insert(), events[i : i + 5000])
            conn.execute(
                entity_budget.insert(),
                [
                    {"entity_id": e, "month": m, "monthly_budget": b}
                    for m, per in budgets.items()
                    for e, b in per.items()
                ],
            )
            conn.execute(
                credit_pool.insert(), [{"month": m, "included": v} for m, v in pools.items()]
            )
            conn.execute(license_sync.insert(), [sync_row])
    finally:
        engine.dispose()
