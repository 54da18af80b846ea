"""Exact money and quantities: the one storage scale, the one rounding, the one display.

Every amount is a ``Decimal`` from parsing to storage to metadata. The warehouse stores
NUMERIC(38, 12) (26 digits before the point, 12 after); credits and quantities derived by the
project (list cost, reconciliation deltas, budgets, forecasts) are rounded once, here, to that
scale, so what is computed is what is stored. People see credits at 2 decimals in metadata and
messages; storage keeps all 12.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

PRECISION = 38
SCALE = 12
INTEGER_DIGITS = PRECISION - SCALE
CREDITS_QUANTUM = Decimal(1).scaleb(-SCALE)  # derived credits: stored exactly at 12 decimals
QUANTITY_QUANTUM = Decimal(1).scaleb(-SCALE)  # derived quantities: the same storage scale
QUANTUM = QUANTITY_QUANTUM
DISPLAY_QUANTUM = Decimal("0.01")  # what people see of credits
# Half away from zero: what PostgreSQL's NUMERIC does when a value has too many decimals, so a
# value rounds the same on every backend. Enough precision for 38 digits and sums of them (the
# default context's 28 digits would round a NUMERIC(38, 12) maximum).
CONTEXT = Context(prec=80, rounding=ROUND_HALF_UP)
_LIMIT = Decimal(10) ** INTEGER_DIGITS
# at or beyond this, rounding to 12 decimals overflows (exact arithmetic: 39 digits)
_FITS = CONTEXT.subtract(_LIMIT, CONTEXT.divide(QUANTUM, 2))


class StorageRangeError(ValueError):
    """A value the warehouse cannot store; the message names where it came from and the field."""


def quantize(value: Decimal | None, quantum: Decimal = QUANTUM) -> Decimal | None:
    """``value`` at the storage scale (None stays None)."""
    return None if value is None else value.quantize(quantum, context=CONTEXT)


def quantize_credits(value: Decimal | None) -> Decimal | None:
    return quantize(value, CREDITS_QUANTUM)


def exact_add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` without the default context's 28-digit rounding."""
    return CONTEXT.add(a, b)


def storage_text(value: Decimal) -> str:
    """The canonical text of a stored amount: fixed 12 decimals, no exponent, no ``-0`` (equal
    values have equal text, so DISTINCT and equality in SQL see numbers, not spellings)."""
    q = value.quantize(QUANTUM, context=CONTEXT)
    if q.is_zero():
        q = abs(q)
    return format(q, "f")


def range_problem(value: object) -> str | None:
    """Why ``value`` does not fit NUMERIC(38, 12), or None when it does (None fits)."""
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value!r} is a binary float, not an exact decimal"
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return f"{value!r} is not a number"
    if not d.is_finite():
        return f"{d} is not a number"
    if not -_LIMIT < d.quantize(QUANTUM, context=CONTEXT) < _LIMIT:  # abs() would round
        return f"{d} has more than {INTEGER_DIGITS} digits before the point"
    return None


def fits(value: object) -> bool:
    """Quick test (a year's backfill checks millions of values): a finite Decimal that fits."""
    return type(value) is Decimal and value.is_finite() and -_FITS < value < _FITS


def check_storable(value: object, where: str, field: str) -> None:
    """Raise ``StorageRangeError`` naming ``where`` and ``field`` if ``value`` does not fit."""
    problem = None if fits(value) else range_problem(value)
    if problem is not None:
        raise StorageRangeError(
            f"{where} field {field}: {problem} (beyond the warehouse's NUMERIC"
            f"({PRECISION}, {SCALE})); nothing was written"
        )


def display_credits(value: Decimal | int | None) -> Decimal | None:
    """Credits as people see them (2 decimals)."""
    return None if value is None else quantize(Decimal(value), DISPLAY_QUANTUM)


def format_credits(value: object) -> str:
    """``1,234.57`` (``-`` for None), for messages."""
    if value is None:
        return "-"
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    return f"{d.quantize(DISPLAY_QUANTUM, context=CONTEXT):,.2f}"


def credits_metadata(value: Decimal | int | None) -> float | None:
    """Credits for Dagster metadata (a float field): the 2-decimal display value, taken from the
    exact Decimal, so the number people read is the rounded exact amount."""
    shown = display_credits(value)
    return None if shown is None else float(shown)
