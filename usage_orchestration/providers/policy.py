"""What every provider client does alike beyond the HTTP session of ``providers/http.py``: which
request budget an account draws from, and how an answer that breaks its schema is reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from usage_orchestration.providers.http import RequestBudget, RequestBudgets, SharedRateBudget


def account_budget(
    provider: str,
    account: str,
    max_requests: int,
    per_seconds: float,
    *,
    budgets: RequestBudgets | None,
    path: Path,
) -> RequestBudget:
    """The request budget of one provider account, ``max_requests`` per ``per_seconds``: drawn
    from ``budgets`` when given (e.g. the warehouse's), else the file at ``path`` that every
    process on this host shares."""
    if budgets is not None:
        return budgets.budget(provider, account, max_requests, per_seconds)
    return SharedRateBudget(path, max_requests, per_seconds)


# floats below this magnitude hold every integer exactly
_EXACT_FLOAT = 2**53


def integral(v: Any) -> Any:
    """``v``, or the int a float with no fractional part stands for: JSON Schema's (and
    OpenAPI 3.1's) ``integer`` matches 84.0 and 5e2. Below 2**53 only, where a float is still
    exact; anything else (84.5, text, booleans) is returned as it is, for the field's own check
    to refuse."""
    if isinstance(v, float) and v.is_integer() and abs(v) < _EXACT_FLOAT:
        return int(v)
    return v


def schema_problem(
    exc: ValidationError, item_of: Callable[[tuple[Any, ...]], str] | None = None
) -> str:
    """``field 'a.b': <message> (<n> problem(s))`` for the first problem of a body that does not
    validate; ``item_of`` turns the problem's location into a prefix naming the record it lies
    in (``""`` when none)."""
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first["loc"])
    item = item_of(first["loc"]) if item_of is not None else ""
    return f"{item}field {where!r}: {first['msg']} ({exc.error_count()} problem(s))"
