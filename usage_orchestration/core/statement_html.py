"""The monthly statement as one self-contained HTML page: the figures per entity and provider,
the breaks by status, the caps, and an inline SVG burn-down plot per entity (budget vs actual vs
forecast). Pure: returns text; no network assets, no files.

Entity names are data (the ledger's): the template autoescapes everything it prints. Money is
shown at 2 decimals (``format_credits``); every figure cell carries ``data-field`` (and its row
``data-entity``) so readers and tests find a value without scraping layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from jinja2 import Environment, StrictUndefined

from usage_orchestration.core.money import format_credits
from usage_orchestration.core.statement import BurnDown, Statement

_W, _H = 640, 240  # the plot's size in SVG units
_L, _R, _T, _B = 70, 20, 16, 34  # margins: left (axis labels), right, top, bottom


@dataclass(frozen=True)
class Plot:
    """An entity's burn-down in SVG coordinates."""

    width: int
    height: int
    actual: str  # polyline points
    forecast: str
    budget_y: float | None
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    left: int
    right: int
    top: int
    bottom: int


def _points(series: list[tuple[date, Decimal]], x: object, y: object) -> str:
    return " ".join(f"{x(d.day):.1f},{y(v):.1f}" for d, v in series)  # type: ignore[operator]


def plot(b: BurnDown) -> Plot:
    values = [v for _, v in b.actual] + [v for _, v in b.forecast]
    if b.budget is not None:
        values.append(b.budget)
    top = max([Decimal(0), *values]) * Decimal("1.1") or Decimal(1)
    inner_w, inner_h = _W - _L - _R, _H - _T - _B

    def x(day: int) -> float:
        return _L + inner_w * (day - 1) / max(b.days_in_month - 1, 1)

    def y(v: Decimal) -> float:
        return float(_T + inner_h * (1 - v / top))

    ticks = [top * i / 4 for i in range(5)]
    return Plot(
        width=_W,
        height=_H,
        actual=_points(b.actual, x, y),
        forecast=_points(b.forecast, x, y),
        budget_y=y(b.budget) if b.budget is not None else None,
        y_ticks=[(y(t), format_credits(t)) for t in ticks],
        x_ticks=[(x(d), str(d)) for d in sorted({1, 8, 15, 22, b.days_in_month})],
        left=_L,
        right=_W - _R,
        top=_T,
        bottom=_H - _B,
    )


def _credits(value: object) -> str:
    return format_credits(value)


def _pct(value: object) -> str:
    return "-" if value is None else f"{Decimal(str(value)):,.2f} %"


def _qty(value: object) -> str:
    if value is None:
        return "-"
    text = format(Decimal(str(value)).normalize(), ",f")
    return text


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Usage statement {{ s.month_key }} ({{ s.state }})</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.provisional { color: #a60; } .closed { color: #070; }
.over { color: #b00; font-weight: bold; }
svg { background: #fafafa; border: 1px solid #ddd; }
.legend span { margin-right: 1.5em; }
</style>
</head>
<body>
<h1>Usage statement {{ s.month_key }}</h1>
<p id="state" class="{{ s.state }}" data-field="state">{{ s.state }}</p>
<p>{% if s.as_of %}Figures as of <span data-field="as_of">{{ s.as_of.isoformat() }}</span>
({{ s.days_materialized }} day{{ "" if s.days_materialized == 1 else "s" }} of the month
materialized).{% else %}No budget day of this month has been materialized yet.{% endif %}
{% if s.closed %}The month closed at {{ s.closes_at.isoformat() }} (its {{ s.late_days }}-day
late-data window has passed).{% else %}Provisional: late provider data may still change it until
{{ s.closes_at.isoformat() }} (month end + {{ s.late_days }} days).{% endif %}</p>

<h2>Entities</h2>
<table id="entities">
<thead><tr><th>Entity</th><th>Entity id</th><th>Budget</th><th>Used month to date</th>
<th>Percent used</th><th>Forecast month end</th><th>Forecast overrun</th>
<th>Credits charged</th><th>Expected credits</th><th>Delta</th><th>Breaks</th></tr></thead>
<tbody>
{% for e in s.entities %}
<tr data-entity="{{ e.entity_id }}">
<td data-field="entity_name">{{ e.entity_name or ("(unmapped usage)" if not e.entity_id else "-") }}</td>
<td data-field="entity_id"><code>{{ e.entity_id }}</code></td>
<td class="n" data-field="monthly_budget">{{ credits(e.budget.monthly_budget if e.budget else None) }}</td>
<td class="n" data-field="credits_used">{{ credits(e.budget.credits_used if e.budget else None) }}</td>
<td class="n{{ ' over' if e.budget and e.budget.over_budget else '' }}" data-field="budget_percent">{{ pct(e.budget.budget_percent if e.budget else None) }}</td>
<td class="n" data-field="forecast_month_end">{{ credits(e.budget.forecast_month_end if e.budget else None) }}</td>
<td class="n" data-field="forecast_overrun">{{ credits(e.budget.forecast_overrun if e.budget else None) }}</td>
<td class="n" data-field="credits_charged">{{ credits(e.credits_charged) }}</td>
<td class="n" data-field="expected_credits">{{ credits(e.expected_credits) }}</td>
<td class="n" data-field="delta_credits">{{ credits(e.delta_credits) }}</td>
<td class="n" data-field="break_rows">{{ e.breaks | sum(attribute="rows") }}</td>
</tr>
{% endfor %}
</tbody>
</table>

<h2>Per provider</h2>
<table id="providers">
<thead><tr><th>Entity</th><th>Provider</th><th>Resource type</th><th>Usage</th><th>Unit</th>
<th>Credits charged</th><th>Expected credits</th><th>Delta</th><th>Days</th></tr></thead>
<tbody>
{% for e in s.entities %}{% for l in e.lines %}
<tr data-entity="{{ e.entity_id }}" data-provider="{{ l.provider }}" data-resource-type="{{ l.resource_type }}">
<td>{{ e.label }}</td><td>{{ l.provider }}</td><td>{{ l.resource_type }}</td>
<td class="n" data-field="usage_quantity">{{ qty(l.usage_quantity) }}</td><td>{{ l.ledger_unit or "" }}</td>
<td class="n" data-field="credits_charged">{{ credits(l.credits_charged) }}</td>
<td class="n" data-field="expected_credits">{{ credits(l.expected_credits) }}</td>
<td class="n" data-field="delta_credits">{{ credits(l.delta_credits) }}</td>
<td class="n">{{ l.days }}</td>
</tr>
{% endfor %}{% endfor %}
</tbody>
</table>

<h2>Reconciliation breaks by status</h2>
{% set by_status = s.breaks_by_status() %}
{% if by_status %}
<table id="breaks">
<thead><tr><th>Status</th><th>Rows (day × entity × resource type)</th><th>Delta credits</th></tr></thead>
<tbody>
{% for status, (n, d) in by_status.items() %}
<tr data-status="{{ status }}"><td>{{ status }}</td><td class="n" data-field="rows">{{ n }}</td>
<td class="n" data-field="delta_credits">{{ credits(d) }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}<p>No breaks: every reconciled row matched.</p>{% endif %}

<h2>Provider caps</h2>
{% if s.caps %}
<table id="caps">
<thead><tr><th>Provider</th><th>Metric</th><th>Cap</th><th>Used</th><th>Percent used</th>
<th>Forecast month end</th><th>Forecast overage</th></tr></thead>
<tbody>
{% for c in s.caps %}
<tr data-provider="{{ c.provider }}" data-metric="{{ c.metric }}"><td>{{ c.provider }}</td><td>{{ c.metric }}</td>
<td class="n">{{ qty(c.cap_quantity) }} {{ c.unit }}</td>
<td class="n" data-field="used_quantity">{{ qty(c.used_quantity) }} {{ c.unit }}</td>
<td class="n{{ ' over' if c.over_cap else '' }}" data-field="percent_used">{{ pct(c.percent_used) }}</td>
<td class="n">{{ qty(c.forecast_month_end) }}</td><td class="n">{{ qty(c.forecast_overage) }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}<p>No provider caps configured for the month.</p>{% endif %}

<h2>Burn-down per entity</h2>
<p class="legend"><span style="color:#1f5fbf">━ actual (cumulative)</span>
<span style="color:#1f5fbf">┅ forecast to month end</span>
<span style="color:#b00">━ budget</span></p>
{% for e in s.entities if e.entity_id %}
{% set p = plots[e.entity_id] %}
<h3 data-entity="{{ e.entity_id }}">{{ e.label }}</h3>
<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{{ p.width }}" height="{{ p.height }}"
 viewBox="0 0 {{ p.width }} {{ p.height }}" data-entity="{{ e.entity_id }}">
<title>{{ e.label }}: budget vs actual vs forecast, {{ s.month_key }}</title>
{% for y, label in p.y_ticks %}<line x1="{{ p.left }}" x2="{{ p.right }}" y1="{{ '%.1f' % y }}" y2="{{ '%.1f' % y }}" stroke="#e4e4e4"/>
<text x="{{ p.left - 6 }}" y="{{ '%.1f' % (y + 4) }}" font-size="10" text-anchor="end">{{ label }}</text>
{% endfor %}{% for x, label in p.x_ticks %}<text x="{{ '%.1f' % x }}" y="{{ p.bottom + 16 }}" font-size="10" text-anchor="middle">{{ label }}</text>
{% endfor %}<line x1="{{ p.left }}" x2="{{ p.left }}" y1="{{ p.top }}" y2="{{ p.bottom }}" stroke="#888"/>
<line x1="{{ p.left }}" x2="{{ p.right }}" y1="{{ p.bottom }}" y2="{{ p.bottom }}" stroke="#888"/>
{% if p.budget_y is not none %}<line class="budget" x1="{{ p.left }}" x2="{{ p.right }}" y1="{{ '%.1f' % p.budget_y }}" y2="{{ '%.1f' % p.budget_y }}" stroke="#b00" stroke-width="1.5"/>{% endif %}
{% if p.actual %}<polyline class="actual" points="{{ p.actual }}" fill="none" stroke="#1f5fbf" stroke-width="2"/>{% endif %}
{% if p.forecast %}<polyline class="forecast" points="{{ p.forecast }}" fill="none" stroke="#1f5fbf" stroke-width="2" stroke-dasharray="5,4"/>{% endif %}
</svg>
{% endfor %}
</body>
</html>
"""

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True)
_PAGE = _ENV.from_string(_TEMPLATE)


def render_statement(s: Statement) -> str:
    """The statement's HTML page (UTF-8 text)."""
    plots = {e.entity_id: plot(e.burn_down) for e in s.entities if e.entity_id}
    return _PAGE.render(s=s, plots=plots, credits=_credits, pct=_pct, qty=_qty)
