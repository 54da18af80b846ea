"""Provider usage against the credit ledger, per (day, entity, resource type). Pure: no I/O.

Inputs are small aggregates (the SQL that builds them lives in ``warehouse/analysis.py``): provider
usage summed per (provider, resource, sub-account, metric, unit), the ledger's usage summed per
(entity, resource type, unit), and the day's fetch coverage per provider account. The mapping
and rate card from the settings turn provider usage into expected ledger quantities and credits.

Statuses (see docs/reconciliation.md for what each means to finance):
``matched``, ``ledger_under``, ``ledger_over``, ``missing_in_ledger``, ``missing_at_provider``,
``unmapped``, ``provider_unavailable``, ``ledger_unavailable``. A row is a *break* when its delta lies outside the
resource type's tolerance; ``within_tolerance`` is False exactly for breaks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal, get_args

from usage_orchestration.core.mapping import MappingError, resolve_mapping, to_ledger_quantity
from usage_orchestration.core.money import QUANTITY_QUANTUM, quantize
from usage_orchestration.ledger.base import LedgerDailyUsage, holds_events
from usage_orchestration.settings.mapping import RateCardEntry, UsageMapping

Status = Literal[
    "matched",
    "ledger_under",
    "ledger_over",
    "missing_in_ledger",
    "missing_at_provider",
    "unmapped",
    "provider_unavailable",
    "ledger_unavailable",
]
STATUSES: tuple[Status, ...] = get_args(Status)
LEAK_STATUSES = frozenset({"ledger_under", "missing_in_ledger"})
OVERCHARGE_STATUSES = frozenset({"ledger_over", "missing_at_provider"})

_Q = QUANTITY_QUANTUM  # stored quantities/credits: the storage scale (core/money.py)
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
    return quantize(x, _Q)


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


@dataclass
class _Unmapped:
    quantity: Decimal = Decimal(0)
    rows: int = 0
    resources: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Rules:
    """What the mapping rules say about (entity, resource type) keys, for the enabled providers."""

    enabled: frozenset[str]
    key_providers: Mapping[tuple[str, str], set[str]]  # every provider a rule names for a key
    type_providers: Mapping[str, set[str]]  # enabled providers feeding a resource type
    key_resources: Mapping[tuple[str, str], Mapping[str, set[str | None]]]

    @classmethod
    def of(cls, config: ReconcileConfig) -> _Rules:
        key_providers: dict[tuple[str, str], set[str]] = defaultdict(set)
        type_providers: dict[str, set[str]] = defaultdict(set)
        key_resources: dict[tuple[str, str], dict[str, set[str | None]]] = defaultdict(
            lambda: defaultdict(set)
        )
        enabled = frozenset(config.providers)
        for m in config.mappings:
            key_providers[(m.entity_id, m.resource_type)].add(m.provider)
            key_resources[(m.entity_id, m.resource_type)][m.provider].add(m.resource_id)
            if m.provider in enabled:
                type_providers[m.resource_type].add(m.provider)
        return cls(enabled, key_providers, type_providers, key_resources)


def _provider_side(
    day: date, usage: Iterable[ProviderAggregate], config: ReconcileConfig
) -> tuple[dict[tuple[str, str], _Expected], dict[tuple[str, str, str], _Unmapped]]:
    """Provider usage of ``day`` mapped and converted into ledger units per (entity, resource
    type); what matches no mapping per (provider, metric, unit)."""
    enabled = set(config.providers)
    expected: dict[tuple[str, str], _Expected] = {}
    unmapped: dict[tuple[str, str, str], _Unmapped] = {}
    for agg in usage:
        if agg.usage_date != day or agg.provider not in enabled:
            continue
        m = resolve_mapping(
            config.mappings, agg.provider, agg.resource_id, agg.metric, agg.sub_account_id
        )
        if m is None:
            u = unmapped.setdefault((agg.provider, agg.metric, agg.unit), _Unmapped())
            u.quantity += agg.quantity
            u.rows += agg.rows
            u.resources.add(agg.resource_id)
            continue
        try:
            qty = to_ledger_quantity(
                dict(config.rate_card), m.resource_type, agg.quantity, agg.unit
            )
        except MappingError as exc:
            raise ReconcileError(
                f"{agg.provider} {agg.resource_id} {agg.metric} on {day}: field consumed_unit: {exc}"
            ) from None
        e = expected.setdefault((m.entity_id, m.resource_type), _Expected(m.entity_type))
        e.quantity += qty
        e.rows += agg.rows
        e.providers.add(agg.provider)
        e.resources.add(agg.resource_id)
    return expected, unmapped


def _ledger_side(
    day: date,
    ledger_rows: Iterable[LedgerDailyUsage],
    config: ReconcileConfig,
    rules: _Rules,
    expected: Mapping[tuple[str, str], _Expected],
) -> dict[tuple[str, str], _Recorded]:
    """The ledger's usage per (entity, resource type), for the provider-backed resource types
    only (in the rate card and fed by an enabled provider): AI credits and the like have no
    provider to compare against."""
    recorded: dict[tuple[str, str], _Recorded] = {}
    for row in ledger_rows:
        entry = config.rate_card.get(row.resource_type)
        if entry is None or not rules.type_providers.get(row.resource_type):
            continue
        key = (row.entity_id, row.resource_type)
        named = rules.key_providers.get(key)
        if named is not None and not (named & rules.enabled) and key not in expected:
            continue  # fed only by a disabled provider
        r = recorded.setdefault(key, _Recorded(entity_type=row.entity_type))
        q = _ledger_quantity(row, entry, day)
        r.quantity = None if (q is None or r.quantity is None) else r.quantity + q
        r.credits += row.credits
        r.events += row.events
    return recorded


@dataclass(frozen=True)
class _Comparison:
    status: Status
    within: bool
    reason: str | None
    delta_quantity: Decimal | None
    delta_credits: Decimal
    delta_pct: Decimal | None
    on_credits: bool


def _compare(
    entry: RateCardEntry, e: _Expected | None, r: _Recorded | None, provider_label: str
) -> _Comparison:
    """Expected against recorded for one key: on quantities, or on credits when the ledger
    backend cannot tell quantities."""
    exp_q = e.quantity if e else Decimal(0)
    exp_c = exp_q * entry.credits_per_unit
    rec_q = r.quantity if r else None
    got_c = r.credits if r else Decimal(0)
    delta_c = got_c - exp_c
    on_credits = r is not None and rec_q is None
    delta_q: Decimal | None
    if on_credits:
        delta_q, delta_pct, sign = None, _pct(delta_c, exp_c), delta_c
        tol = tolerance(entry, exp_c, on_credits=True)
        within = abs(delta_c) <= tol
        tol_txt = f"credits, tolerance {_fmt(tol)}"
    else:
        delta_q = (rec_q or Decimal(0)) - exp_q
        delta_pct, sign = _pct(delta_q, exp_q), delta_q
        tol = tolerance(entry, exp_q)
        within = abs(delta_q) <= tol
        tol_txt = f"{entry.ledger_unit}, tolerance {_fmt(tol)}"
    status: Status
    reason: str | None
    if e is None:
        status = "missing_at_provider" if sign != 0 else "matched"
        reason = f"ledger charged {_fmt(got_c)} credits; no {provider_label} usage mapped here"
    elif r is None:
        status = "missing_in_ledger" if sign != 0 else "matched"
        reason = f"{provider_label} measured {_fmt(exp_q)} {entry.ledger_unit}; no ledger events"
    elif within:
        status, reason = "matched", None
    else:
        status = "ledger_under" if sign < 0 else "ledger_over"
        if on_credits:
            seen = f"ledger {_fmt(got_c)} vs {provider_label} {_fmt(exp_c)} credits"
        else:
            seen = (
                f"ledger {_fmt(rec_q or Decimal(0))} vs {provider_label} {_fmt(exp_q)} "
                f"{entry.ledger_unit}"
            )
        reason = f"{seen}; outside tolerance ({tol_txt})"
    if not within and reason is not None and "tolerance" not in reason:
        reason += f"; outside tolerance ({tol_txt})"
    return _Comparison(status, bool(within), reason, delta_q, delta_c, delta_pct, on_credits)


# A key not compared has none of the figures a comparison gives, and is no break.
_FIGURES = ("expected_quantity", "expected_credits", "delta_quantity", "delta_credits", "delta_pct")
_NOT_COMPARED: dict[str, Any] = {**dict.fromkeys(_FIGURES, None), "within_tolerance": True}


def _key_row(
    day: date,
    key: tuple[str, str],
    e: _Expected | None,
    r: _Recorded | None,
    rules: _Rules,
    coverage: Mapping[str, list[CoverageEntry]],
    config: ReconcileConfig,
    ledger_empty: bool,
) -> ReconciliationRow:
    """The row of one (entity, resource type): compared, or not compared and why."""
    entry = config.rate_card[key[1]]
    providers = (e.providers if e else set()) | (
        rules.key_providers.get(key, set()) & rules.enabled
    )
    providers = providers or rules.type_providers[key[1]]
    provider_label = "+".join(sorted(providers))
    base = _key_identity(day, key, e, r, entry, provider_label)
    unavailable = _unavailable_reason(
        providers, rules.key_resources.get(key, {}), coverage, day, config.accounts
    )
    if unavailable:
        return ReconciliationRow(
            **base,
            **_NOT_COMPARED,
            status="provider_unavailable",
            reason=f"not compared: {unavailable}",
        )
    if ledger_empty:
        return ReconciliationRow(
            **base,
            **_NOT_COMPARED,
            status="ledger_unavailable",
            reason=f"not compared: the ledger holds no events at all on {day} (a ledger or "
            "License Manager sync problem, or the ledger_daily_usage day not materialized)",
        )
    return _compared_row(base, entry, e, _compare(entry, e, r, provider_label))


def _key_identity(
    day: date,
    key: tuple[str, str],
    e: _Expected | None,
    r: _Recorded | None,
    entry: RateCardEntry,
    provider_label: str,
) -> dict[str, Any]:
    """What a key's row says whether or not it is compared: who, what, and what was recorded."""
    entity_id, resource_type = key
    return dict(
        usage_date=day,
        provider=provider_label,
        entity_id=entity_id,
        entity_type=(e.entity_type if e else None) or (r.entity_type if r else None),
        resource_type=resource_type,
        ledger_unit=entry.ledger_unit,
        provider_rows=e.rows if e else 0,
        ledger_events=r.events if r else 0,
        blocking=entry.block_downstream,
        recorded_quantity=_q(r.quantity if r else None),
        recorded_credits=_q(r.credits if r else None),
    )


def _compared_row(
    base: Mapping[str, Any], entry: RateCardEntry, e: _Expected | None, c: _Comparison
) -> ReconciliationRow:
    exp_q = e.quantity if e else None
    return ReconciliationRow(
        **base,
        expected_quantity=_q(exp_q),
        expected_credits=_q(exp_q * entry.credits_per_unit) if exp_q is not None else None,
        delta_quantity=_q(c.delta_quantity),
        delta_credits=_q(c.delta_credits),
        delta_pct=c.delta_pct,
        status=c.status,
        within_tolerance=c.within,
        reason=c.reason,
        compared_on="credits" if c.on_credits else "quantity",
    )


def _unmapped_rows(
    day: date, unmapped: Mapping[tuple[str, str, str], _Unmapped]
) -> list[ReconciliationRow]:
    """One row per (provider, metric, unit) of usage that matched no mapping (zero usage, e.g. a
    sparse metric reported as 0, is not shown)."""
    units_per_metric: dict[tuple[str, str], int] = defaultdict(int)
    for provider, metric, _unit in unmapped:
        units_per_metric[(provider, metric)] += 1
    out: list[ReconciliationRow] = []
    for (provider, metric, unit), u in sorted(unmapped.items()):
        if u.quantity == 0:
            continue
        label = metric if units_per_metric[(provider, metric)] == 1 else f"{metric} ({unit})"
        shown = ", ".join(sorted(u.resources)[:5]) + (" …" if len(u.resources) > 5 else "")
        out.append(
            ReconciliationRow(
                usage_date=day,
                provider=provider,
                entity_id="",
                entity_type=None,
                resource_type=label,
                ledger_unit=unit,
                **{**_NOT_COMPARED, "expected_quantity": _q(u.quantity)},
                recorded_quantity=None,
                recorded_credits=None,
                status="unmapped",
                reason=f"{u.rows} {provider} row(s) of {metric} in {unit} matched no mapping "
                f"(resources: {shown})",
                provider_rows=u.rows,
            )
        )
    return out


def reconcile_day(
    day: date,
    provider_usage: Iterable[ProviderAggregate],
    ledger_usage: Iterable[LedgerDailyUsage],
    coverage: Iterable[CoverageEntry],
    config: ReconcileConfig,
) -> list[ReconciliationRow]:
    """One row per (entity, resource type) seen on either side, plus one per unmapped provider
    metric, for ``day``. Rows of other days in the inputs are ignored.

    A key is not compared (``within_tolerance``, no delta) when its providers' usage was not
    fetched for the day (``provider_unavailable``) or when the ledger holds no event at all that
    day (``ledger_unavailable``: a ledger problem, not a wall of revenue leaks)."""
    rules = _Rules.of(config)
    expected, unmapped = _provider_side(day, provider_usage, config)
    ledger_rows = [r for r in ledger_usage if r.usage_date == day]
    recorded = _ledger_side(day, ledger_rows, config, rules, expected)
    by_provider: dict[str, list[CoverageEntry]] = defaultdict(list)
    for c in coverage:
        by_provider[c.provider].append(c)
    out = [
        _key_row(
            day,
            key,
            expected.get(key),
            recorded.get(key),
            rules,
            by_provider,
            config,
            not holds_events(ledger_rows),
        )
        for key in sorted(set(expected) | set(recorded))
    ]
    return out + _unmapped_rows(day, unmapped)


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
]
