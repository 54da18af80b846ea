"""Provider usage against the credit ledger, per (day, entity, resource type). Pure: no I/O.

Inputs are small aggregates (the SQL that builds them lives in ``warehouse/analysis.py``): provider
usage summed per (provider, resource, sub-account, metric, unit), the ledger's usage summed per
(entity, resource type, unit), and the day's fetch coverage per provider account. The mapping
and rate card from the settings turn provider usage into expected ledger quantities and credits.

Statuses (see docs/reconciliation.md for what each means to finance):
``matched``, ``ledger_under``, ``ledger_over``, ``missing_in_ledger``, ``missing_at_provider``,
``unmapped``, ``provider_unavailable``. A row is a *break* when its delta lies outside the
resource type's tolerance; ``within_tolerance`` is False exactly for breaks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from usage_orchestration.core.mapping import MappingError, resolve_mapping, to_ledger_quantity
from usage_orchestration.ledger.base import LedgerDailyUsage
from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping

Status = Literal[
    "matched",
    "ledger_under",
    "ledger_over",
    "missing_in_ledger",
    "missing_at_provider",
    "unmapped",
    "provider_unavailable",
]
STATUSES: tuple[Status, ...] = (
    "matched",
    "ledger_under",
    "ledger_over",
    "missing_in_ledger",
    "missing_at_provider",
    "unmapped",
    "provider_unavailable",
)
LEAK_STATUSES = frozenset({"ledger_under", "missing_in_ledger"})
OVERCHARGE_STATUSES = frozenset({"ledger_over", "missing_at_provider"})

_Q = Decimal("0.000000001")  # stored quantities/credits: 9 decimals (NUMERIC(38, 12))
_PCT = Decimal("0.0001")


class ReconcileError(ValueError):
    """Input cannot be reconciled; the message names provider/entity, day and field."""


@dataclass(frozen=True)
class ProviderAggregate:
    """provider_usage summed per (day, provider, resource, sub-account, metric, unit)."""

    usage_date: date
    provider: str
    resource_id: str
    sub_account_id: str | None
    metric: str
    unit: str
    quantity: Decimal
    rows: int = 1


@dataclass(frozen=True)
class CoverageEntry:
    """Whether (provider, account) was fetched for the day (provider_coverage)."""

    provider: str
    account_id: str
    status: str  # complete | unavailable
    reason: str | None = None


@dataclass(frozen=True)
class CoverageAccount:
    """A configured account whose fetch coverage is recorded per day, and the provider resource
    it covers (None: every resource of the provider, e.g. a whole Neon organization). The
    provider registry defines them; they are matched exactly, never by substring."""

    account_id: str
    resource_id: str | None


@dataclass(frozen=True)
class ReconcileConfig:
    mappings: Sequence[UsageMapping]
    rate_card: Mapping[str, RateCardEntry]
    providers: Sequence[str]  # the enabled providers
    # configured accounts per provider: a mapped resource whose account has no coverage row for
    # the day was not fetched, so its usage is unknown, not zero
    accounts: Mapping[str, Sequence[CoverageAccount]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReconciliationRow:
    usage_date: date
    provider: str  # "forge+phala" when several providers feed one entity/resource type
    entity_id: str  # "" for unmapped usage
    entity_type: str | None
    resource_type: str  # provider metric for unmapped usage
    ledger_unit: str | None  # the provider unit for unmapped usage
    expected_quantity: Decimal | None
    expected_credits: Decimal | None
    recorded_quantity: Decimal | None
    recorded_credits: Decimal | None
    delta_quantity: Decimal | None
    delta_credits: Decimal | None  # recorded - expected: < 0 is a leak
    delta_pct: Decimal | None  # delta / expected × 100 (on what was compared)
    status: Status
    within_tolerance: bool  # False exactly for breaks
    reason: str | None
    provider_rows: int = 0
    ledger_events: int = 0
    compared_on: str | None = None  # quantity | credits
    blocking: bool = False

    @property
    def is_break(self) -> bool:
        return not self.within_tolerance

    def record(self, load_id: str) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["load_id"] = load_id
        return d


@dataclass
class _Expected:
    entity_type: str
    quantity: Decimal = Decimal(0)
    rows: int = 0
    providers: set[str] = field(default_factory=set)
    resources: set[str] = field(default_factory=set)


@dataclass
class _Recorded:
    entity_type: str
    quantity: Decimal | None = Decimal(0)  # None: the backend cannot tell quantities
    credits: Decimal = Decimal(0)
    events: int = 0


def _q(x: Decimal | None) -> Decimal | None:
    return None if x is None else x.quantize(_Q)


def _fmt(x: Decimal) -> str:
    """A readable number for reasons: at most 6 decimals, no trailing zeros."""
    q = x.quantize(Decimal("0.000001")).normalize()
    return format(q, "f")


def _pct(delta: Decimal, base: Decimal) -> Decimal | None:
    return None if base == 0 else (delta / base * 100).quantize(_PCT)


def tolerance(entry: RateCardEntry, expected: Decimal, *, on_credits: bool = False) -> Decimal:
    """The largest |delta| still matched: max(absolute, relative × |expected|). On credits (the
    ledger cannot tell quantities) the absolute tolerance is priced at the rate card."""
    abs_tol = entry.tolerance_abs * entry.credits_per_unit if on_credits else entry.tolerance_abs
    return max(abs_tol, entry.tolerance_rel * abs(expected))


def _covering(
    accounts: Sequence[CoverageAccount], resource_ids: set[str | None]
) -> list[CoverageAccount]:
    """The accounts whose coverage decides for usage of ``resource_ids`` (None: any resource)."""
    if None in resource_ids:
        return list(accounts)
    return [a for a in accounts if a.resource_id is None or a.resource_id in resource_ids]


def _unavailable_reason(
    providers: Iterable[str],
    resource_ids: Mapping[str, set[str | None]],
    coverage: Mapping[str, list[CoverageEntry]],
    day: date,
    accounts: Mapping[str, Sequence[CoverageAccount]],
) -> str | None:
    """Why the providers' usage for a key cannot be trusted on ``day``, or None."""
    reasons: list[str] = []
    for p in sorted(providers):
        entries = {c.account_id: c for c in coverage.get(p, [])}
        rids = resource_ids.get(p, {None})
        configured = accounts.get(p)
        if configured is None:  # accounts unknown: every coverage row of the provider decides
            deciding: list[CoverageAccount] = [CoverageAccount(a, None) for a in entries]
            if not deciding:
                reasons.append(f"{p}: no coverage recorded for {day} (provider usage not fetched)")
                continue
        else:
            deciding = _covering(configured, rids)
            if not deciding:
                shown = ", ".join(sorted(r for r in rids if r))
                reasons.append(
                    f"{p}: no configured account covers {shown} (provider usage not fetched)"
                )
                continue
        unfetched = [a.account_id for a in deciding if a.account_id not in entries]
        if unfetched:
            reasons.append(
                f"{p}: no coverage recorded for {day} for {', '.join(unfetched[:3])} (not fetched)"
            )
            continue
        bad = [
            entries[a.account_id] for a in deciding if entries[a.account_id].status != "complete"
        ]
        if bad:
            detail = "; ".join(f"{c.account_id}: {c.reason or 'unavailable'}" for c in bad[:3])
            reasons.append(f"{p} unavailable for {day} ({detail})")
    return " | ".join(reasons) or None


def _ledger_quantity(row: LedgerDailyUsage, entry: RateCardEntry, day: date) -> Decimal | None:
    if row.quantity is None or not row.unit:
        return None
    if row.unit == entry.ledger_unit:
        return row.quantity
    conv = entry.conversions.get(row.unit)
    if conv is None:
        raise ReconcileError(
            f"ledger {row.entity_id} {row.resource_type} on {day}: field unit {row.unit!r} is "
            f"neither the rate card's ledger_unit {entry.ledger_unit!r} nor a known conversion"
        )
    return conv.apply(row.quantity)


def reconcile_day(
    day: date,
    provider_usage: Iterable[ProviderAggregate],
    ledger_usage: Iterable[LedgerDailyUsage],
    coverage: Iterable[CoverageEntry],
    config: ReconcileConfig,
) -> list[ReconciliationRow]:
    """One row per (entity, resource type) seen on either side, plus one per unmapped provider
    metric, for ``day``. Rows of other days in the inputs are ignored."""
    enabled = set(config.providers)
    rate_card = config.rate_card

    # provider side: map and convert
    expected: dict[tuple[str, str], _Expected] = {}
    key_resources: dict[tuple[str, str], dict[str, set[str | None]]] = defaultdict(
        lambda: defaultdict(set)
    )
    unmapped: dict[tuple[str, str, str], list[Any]] = {}
    for agg in provider_usage:
        if agg.usage_date != day or agg.provider not in enabled:
            continue
        m = resolve_mapping(
            config.mappings, agg.provider, agg.resource_id, agg.metric, agg.sub_account_id
        )
        if m is None:
            u = unmapped.setdefault((agg.provider, agg.metric, agg.unit), [Decimal(0), 0, set()])
            u[0] += agg.quantity
            u[1] += agg.rows
            u[2].add(agg.resource_id)
            continue
        try:
            qty = to_ledger_quantity(dict(rate_card), m.resource_type, agg.quantity, agg.unit)
        except MappingError as exc:
            raise ReconcileError(
                f"{agg.provider} {agg.resource_id} {agg.metric} on {day}: field consumed_unit: {exc}"
            ) from None
        key = (m.entity_id, m.resource_type)
        e = expected.setdefault(key, _Expected(entity_type=m.entity_type))
        e.quantity += qty
        e.rows += agg.rows
        e.providers.add(agg.provider)
        e.resources.add(agg.resource_id)

    # which providers and resources feed each (entity, resource type), per the mapping rules
    rule_providers: dict[tuple[str, str], set[str]] = defaultdict(set)
    type_providers: dict[str, set[str]] = defaultdict(set)
    for m in config.mappings:
        rule_providers[(m.entity_id, m.resource_type)].add(m.provider)
        key_resources[(m.entity_id, m.resource_type)][m.provider].add(m.resource_id)
        if m.provider in enabled:
            type_providers[m.resource_type].add(m.provider)

    # ledger side: only provider-backed resource types (in the rate card and fed by an enabled
    # provider) are reconciled; AI credits and the like have no provider to compare against
    recorded: dict[tuple[str, str], _Recorded] = {}
    for row in ledger_usage:
        if row.usage_date != day:
            continue
        entry = rate_card.get(row.resource_type)
        if entry is None or not type_providers.get(row.resource_type):
            continue
        key = (row.entity_id, row.resource_type)
        if key in rule_providers and not (rule_providers[key] & enabled) and key not in expected:
            continue  # fed only by a disabled provider
        r = recorded.setdefault(key, _Recorded(entity_type=row.entity_type))
        q = _ledger_quantity(row, entry, day)
        r.quantity = None if (q is None or r.quantity is None) else r.quantity + q
        r.credits += row.credits
        r.events += row.events

    cov: dict[str, list[CoverageEntry]] = defaultdict(list)
    for c in coverage:
        cov[c.provider].append(c)

    out: list[ReconciliationRow] = []
    for key in sorted(set(expected) | set(recorded)):
        entity_id, resource_type = key
        entry = rate_card[resource_type]
        e = expected.get(key)
        r = recorded.get(key)
        providers = (e.providers if e else set()) | (rule_providers.get(key, set()) & enabled)
        if not providers:
            providers = set(type_providers[resource_type])
        provider_label = "+".join(sorted(providers))
        entity_type = (e.entity_type if e else None) or (r.entity_type if r else None)
        base = dict(
            usage_date=day,
            provider=provider_label,
            entity_id=entity_id,
            entity_type=entity_type,
            resource_type=resource_type,
            ledger_unit=entry.ledger_unit,
            provider_rows=e.rows if e else 0,
            ledger_events=r.events if r else 0,
            blocking=entry.block_downstream,
        )
        rec_q = r.quantity if r else None
        rec_c = r.credits if r else None
        unavailable = _unavailable_reason(
            providers, key_resources.get(key, {}), cov, day, config.accounts
        )
        if unavailable:
            out.append(
                ReconciliationRow(
                    **base,
                    expected_quantity=None,
                    expected_credits=None,
                    recorded_quantity=_q(rec_q),
                    recorded_credits=_q(rec_c),
                    delta_quantity=None,
                    delta_credits=None,
                    delta_pct=None,
                    status="provider_unavailable",
                    within_tolerance=True,
                    reason=f"not compared: {unavailable}",
                )
            )
            continue
        exp_q = e.quantity if e else Decimal(0)
        exp_c = exp_q * entry.credits_per_unit
        got_c = rec_c if rec_c is not None else Decimal(0)
        delta_c = got_c - exp_c
        on_credits = r is not None and rec_q is None
        if on_credits:
            delta_q: Decimal | None = None
            delta_pct = _pct(delta_c, exp_c)
            within = abs(delta_c) <= tolerance(entry, exp_c, on_credits=True)
            tol_txt = f"credits, tolerance {_fmt(tolerance(entry, exp_c, on_credits=True))}"
            sign = delta_c
        else:
            got_q = rec_q if rec_q is not None else Decimal(0)
            delta_q = got_q - exp_q
            delta_pct = _pct(delta_q, exp_q)
            tol = tolerance(entry, exp_q)
            within = abs(delta_q) <= tol
            tol_txt = f"{entry.ledger_unit}, tolerance {_fmt(tol)}"
            sign = delta_q
        status: Status
        if e is None:
            status = "missing_at_provider" if sign != 0 else "matched"
            reason = f"ledger charged {_fmt(got_c)} credits; no {provider_label} usage mapped here"
        elif r is None:
            status = "missing_in_ledger" if sign != 0 else "matched"
            reason = (
                f"{provider_label} measured {_fmt(exp_q)} {entry.ledger_unit}; no ledger events"
            )
        elif within:
            status = "matched"
            reason = None
        else:
            status = "ledger_under" if sign < 0 else "ledger_over"
            if on_credits:
                seen = f"ledger {_fmt(got_c)} vs {provider_label} {_fmt(exp_c)} credits"
            else:
                seen = f"ledger {_fmt(rec_q or Decimal(0))} vs {provider_label} {_fmt(exp_q)} {entry.ledger_unit}"
            reason = f"{seen}; outside tolerance ({tol_txt})"
        if not within and reason is not None and "tolerance" not in reason:
            reason += f"; outside tolerance ({tol_txt})"
        out.append(
            ReconciliationRow(
                **base,
                expected_quantity=_q(exp_q) if e else None,
                expected_credits=_q(exp_c) if e else None,
                recorded_quantity=_q(rec_q),
                recorded_credits=_q(rec_c),
                delta_quantity=_q(delta_q),
                delta_credits=_q(delta_c),
                delta_pct=delta_pct,
                status=status,
                within_tolerance=bool(within),
                reason=reason,
                compared_on="credits" if on_credits else "quantity",
            )
        )

    units_per_metric: dict[tuple[str, str], int] = defaultdict(int)
    for provider, metric, _unit in unmapped:
        units_per_metric[(provider, metric)] += 1
    for (provider, metric, unit), (qty, rows, resources) in sorted(unmapped.items()):
        if qty == 0:
            continue  # no usage to attribute (sparse metrics reported as zero)
        label = metric if units_per_metric[(provider, metric)] == 1 else f"{metric} ({unit})"
        shown = ", ".join(sorted(resources)[:5]) + (" …" if len(resources) > 5 else "")
        out.append(
            ReconciliationRow(
                usage_date=day,
                provider=provider,
                entity_id="",
                entity_type=None,
                resource_type=label,
                ledger_unit=unit,
                expected_quantity=_q(qty),
                expected_credits=None,
                recorded_quantity=None,
                recorded_credits=None,
                delta_quantity=None,
                delta_credits=None,
                delta_pct=None,
                status="unmapped",
                within_tolerance=True,
                reason=f"{rows} {provider} row(s) of {metric} in {unit} matched no mapping "
                f"(resources: {shown})",
                provider_rows=rows,
            )
        )
    return out


@dataclass(frozen=True)
class ReconciliationSummary:
    counts: dict[str, int]
    breaks: int
    blocking_breaks: int
    leak_credits: Decimal  # credits the ledger did not charge (ledger_under, missing_in_ledger)
    overcharge_credits: Decimal  # credits charged beyond measured usage
    unmapped_rows: int
    worst: list[ReconciliationRow]
    days_with_breaks: list[date]


def summarize(rows: Sequence[ReconciliationRow], worst: int = 10) -> ReconciliationSummary:
    counts = {s: 0 for s in STATUSES}
    leak = Decimal(0)
    over = Decimal(0)
    for r in rows:
        counts[r.status] += 1
        if r.delta_credits is None:
            continue
        if r.status in LEAK_STATUSES:
            leak += -r.delta_credits
        elif r.status in OVERCHARGE_STATUSES:
            over += r.delta_credits
    breaks = [r for r in rows if r.is_break]
    breaks.sort(key=lambda r: (-abs(r.delta_credits or Decimal(0)), r.usage_date, r.entity_id))
    return ReconciliationSummary(
        counts=counts,
        breaks=len(breaks),
        blocking_breaks=sum(1 for r in breaks if r.blocking),
        leak_credits=leak,
        overcharge_credits=over,
        unmapped_rows=sum(r.provider_rows for r in rows if r.status == "unmapped"),
        worst=breaks[:worst],
        days_with_breaks=sorted({r.usage_date for r in breaks}),
    )


def missing_accounts(
    expected: Mapping[str, Sequence[CoverageAccount]],
    coverage: Iterable[CoverageEntry],
) -> list[str]:
    """Configured accounts with no coverage row for the day, as 'provider:account' (exact ids)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for c in coverage:
        seen[c.provider].add(c.account_id)
    return [
        f"{provider}:{a.account_id}"
        for provider, accounts in expected.items()
        for a in accounts
        if a.account_id not in seen.get(provider, set())
    ]


def with_load(rows: Iterable[ReconciliationRow], load_id: str) -> list[dict[str, Any]]:
    return [r.record(load_id) for r in rows]


__all__ = [
    "STATUSES",
    "CoverageEntry",
    "ProviderAggregate",
    "ReconcileConfig",
    "ReconcileError",
    "ReconciliationRow",
    "ReconciliationSummary",
    "CoverageAccount",
    "missing_accounts",
    "reconcile_day",
    "summarize",
    "tolerance",
    "with_load",
]
