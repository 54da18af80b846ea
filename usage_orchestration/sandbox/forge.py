"""Atlassian Forge app resource usage: ``POST /forge/graphql`` (the GraphQL Gateway) per
specs/forge-app-resource-usage.md and provider-notes.md.

The operation is parsed and executed, not matched against canned JSON: a small GraphQL parser
(operations, variables with defaults, aliases, arguments, inline fragments, named fragments,
``@include``/``@skip``) and an executor over the slice of the schema this API exposes. The answer
is flat or grouped by the variables (``contextAris`` without ``groupBy`` groups by CONTEXT_ARI),
paged by ``filters.page``, and deterministic from (seed, app, resource, day, group).

Knobs (``state['forge']``):
- ``rate_limit``: ``{"max_requests": 5, "per_seconds": 60}`` per account (the basic-auth email),
  sliding window; above it HTTP 429 with Retry-After. ``None`` disables it.
- ``page_size`` (default 100), ``lookback_days`` (default 60; None = unlimited; only days before
  the sandbox's today are reported), ``apps`` (app ids that exist; default any).
- ``inband_errors``: a queue of ``{"statusCode": 500, "message": ..., "errorType": ...,
  "identifier": ..., "count": 1}`` answered as the in-band ``appResourceUsage.error``.
- ``graphql_errors``: a queue of ``{"message": ..., "statusCode": 400, "count": 1}`` answered as
  top-level ``errors[]`` with HTTP 200.
- ``experimental_api``: the X-ExperimentalAPI value required (default: any non-empty value).
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from usage_orchestration.sandbox.core import json_response
from usage_orchestration.sandbox.data import rng, stable_id

if TYPE_CHECKING:
    from usage_orchestration.providers.records import UsageRow
    from usage_orchestration.sandbox.core import Sandbox
    from usage_orchestration.settings import UsageSettings

FLAT = "DevConsoleAppResourceUsageFlatResponse"
GROUPED = "DevConsoleAppResourceUsageGroupedResponse"
RESPONSE_UNION = "DevConsoleAppResourceUsageResponse"
DEFAULT_RATE_LIMIT = {"max_requests": 5, "per_seconds": 60.0}
DEFAULT_PAGE_SIZE = 100
GROUP_BY_VALUES = ("CONTEXT_ARI", "ENVIRONMENT_ID")
ENVIRONMENTS = (
    ("production", Decimal("0.80")),
    ("staging", Decimal("0.15")),
    ("development", None),
)

UNITS = {
    "FUNCTION_COMPUTE": "GB-seconds",
    "KVS_READ": "GB",
    "KVS_WRITE": "GB",
    "LOGS_WRITE": "GB",
    "SQL_COMPUTE_DURATION": "hours",
    "SQL_COMPUTE_REQUESTS": "requests",
    "SQL_STORAGE": "GB",
}
_Q = Decimal("0.000001")

# --------------------------------------------------------------------------------------------
# The schema slice: object type → field → type ("[T]" is a list).
SCHEMA: dict[str, dict[str, str]] = {
    "Query": {"ecosystem": "EcosystemQuery"},
    "EcosystemQuery": {"devConsole": "DevConsoleQuery"},
    "DevConsoleQuery": {"appResourceUsage": RESPONSE_UNION},
    FLAT: {
        "resourceUsage": "[DevConsoleResourceUsage]",
        "pagination": "DevConsolePagination",
        "error": "DevConsoleError",
    },
    GROUPED: {
        "resourceUsage": "[DevConsoleGroupedResourceUsage]",
        "pagination": "DevConsolePagination",
        "error": "DevConsoleError",
    },
    "DevConsoleResourceUsage": {
        "period": "String",
        "resolution": "String",
        "tokensConsumed": "String",
        "tokenUnit": "String",
    },
    "DevConsoleGroupedResourceUsage": {
        "period": "String",
        "resolution": "String",
        "groups": "[DevConsoleResourceUsageGroup]",
    },
    "DevConsoleResourceUsageGroup": {
        "groupBy": "String",
        "groupValue": "String",
        "tokensConsumed": "String",
        "tokenUnit": "String",
    },
    "DevConsolePagination": {"page": "Int", "pageSize": "Int"},
    "DevConsoleError": {
        "message": "String",
        "identifier": "String",
        "extensions": "DevConsoleErrorExtensions",
    },
    "DevConsoleErrorExtensions": {"errorType": "String", "statusCode": "Int"},
}
UNIONS = {RESPONSE_UNION: {FLAT, GROUPED}}
SCALARS = {"String", "Int", "ID", "Boolean", "Float"}


class GraphQLError(Exception):
    def __init__(self, message: str, status: int = 400, error_type: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type

    def as_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "extensions": {"statusCode": self.status, "errorType": self.error_type},
        }


# --------------------------------------------------------------------------------------------
# Parsing
_TOKEN = re.compile(
    r"""
    (?P<ws>[\s,\ufeff]+|\#[^\n]*)
  | (?P<block>\"\"\"(?:[^"\\]|\\.|"(?!""))*\"\"\")
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<spread>\.\.\.)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<punct>[!$&():=@\[\]{|}])
    """,
    re.VERBOSE,
)


@dataclass
class Tok:
    kind: str
    value: str
    pos: int


def tokenize(source: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise GraphQLError(
                f"Syntax Error: unexpected character {source[pos]!r} at offset {pos}"
            )
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Tok(kind, m.group(), pos))
        pos = m.end()
    out.append(Tok("eof", "", pos))
    return out


@dataclass
class Var:
    name: str


@dataclass
class EnumValue:
    name: str


@dataclass
class Field:
    name: str
    alias: str | None
    args: dict[str, Any]
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any] | None


@dataclass
class InlineFragment:
    type_condition: str | None
    directives: list[tuple[str, dict[str, Any]]]
    selections: list[Any]


@dataclass
class FragmentSpread:
    name: str
    directives: list[tuple[str, dict[str, Any]]]


@dataclass
class Operation:
    kind: str
    name: str | None
    variables: dict[str, tuple[str, Any, bool]]  # name → (type text, default, has default)
    selections: list[Any]


@dataclass
class Document:
    operations: list[Operation] = field(default_factory=list)
    fragments: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)


class Parser:
    def __init__(self, source: str) -> None:
        self.toks = tokenize(source)
        self.i = 0

    def peek(self, value: str | None = None, kind: str | None = None) -> bool:
        t = self.toks[self.i]
        return (value is None or t.value == value) and (kind is None or t.kind == kind)

    def take(self, value: str | None = None, kind: str | None = None) -> Tok:
        t = self.toks[self.i]
        if (
            (value is not None and t.value != value)
            or (kind is not None and t.kind != kind)
            or t.kind == "eof"
        ):
            want = value or kind
            got = t.value or "<EOF>"
            raise GraphQLError(f"Syntax Error: expected {want!r}, found {got!r} at offset {t.pos}")
        self.i += 1
        return t

    def document(self) -> Document:
        doc = Document()
        while not self.peek(kind="eof"):
            if self.peek("{"):
                doc.operations.append(Operation("query", None, {}, self.selection_set()))
            elif self.peek("fragment"):
                self.take("fragment")
                name = self.take(kind="name").value
                self.take("on")
                type_name = self.take(kind="name").value
                self.directives()
                doc.fragments[name] = (type_name, self.selection_set())
            elif self.peek("query") or self.peek("mutation") or self.peek("subscription"):
                kind = self.take().value
                name = self.take(kind="name").value if self.peek(kind="name") else None
                variables = self.variable_definitions() if self.peek("(") else {}
                self.directives()
                doc.operations.append(Operation(kind, name, variables, self.selection_set()))
            else:
                t = self.toks[self.i]
                raise GraphQLError(f"Syntax Error: unexpected {t.value!r} at offset {t.pos}")
        if not doc.operations:
            raise GraphQLError("the document holds no operation")
        return doc

    def variable_definitions(self) -> dict[str, tuple[str, Any, bool]]:
        out: dict[str, tuple[str, Any, bool]] = {}
        self.take("(")
        while not self.peek(")"):
            self.take("$")
            name = self.take(kind="name").value
            self.take(":")
            type_text = self.type_ref()
            has_default = False
            default: Any = None
            if self.peek("="):
                self.take("=")
                default, has_default = self.value(const=True), True
            self.directives()
            out[name] = (type_text, default, has_default)
        self.take(")")
        return out

    def type_ref(self) -> str:
        if self.peek("["):
            self.take("[")
            inner = self.type_ref()
            self.take("]")
            text = f"[{inner}]"
        else:
            text = self.take(kind="name").value
        if self.peek("!"):
            self.take("!")
            text += "!"
        return text

    def directives(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while self.peek("@"):
            self.take("@")
            name = self.take(kind="name").value
            out.append((name, self.arguments() if self.peek("(") else {}))
        return out

    def selection_set(self) -> list[Any]:
        self.take("{")
        out: list[Any] = []
        while not self.peek("}"):
            out.append(self.selection())
        self.take("}")
        if not out:
            raise GraphQLError("Syntax Error: empty selection set")
        return out

    def selection(self) -> Any:
        if self.peek(kind="spread"):
            self.take(kind="spread")
            if self.peek("on"):
                self.take("on")
                type_name = self.take(kind="name").value
                directives = self.directives()
                return InlineFragment(type_name, directives, self.selection_set())
            if self.peek("{") or self.peek("@"):
                directives = self.directives()
                return InlineFragment(None, directives, self.selection_set())
            name = self.take(kind="name").value
            return FragmentSpread(name, self.directives())
        first = self.take(kind="name").value
        alias = None
        if self.peek(":"):
            self.take(":")
            alias, first = first, self.take(kind="name").value
        args = self.arguments() if self.peek("(") else {}
        directives = self.directives()
        sub = self.selection_set() if self.peek("{") else None
        return Field(first, alias, args, directives, sub)

    def arguments(self) -> dict[str, Any]:
        self.take("(")
        out: dict[str, Any] = {}
        while not self.peek(")"):
            name = self.take(kind="name").value
            self.take(":")
            out[name] = self.value()
        self.take(")")
        return out

    def value(self, const: bool = False) -> Any:
        t = self.toks[self.i]
        if t.value == "$" and not const:
            self.take("$")
            return Var(self.take(kind="name").value)
        if t.kind == "number":
            self.i += 1
            return float(t.value) if any(c in t.value for c in ".eE") else int(t.value)
        if t.kind == "string":
            self.i += 1
            return json.loads(t.value)
        if t.kind == "block":
            self.i += 1
            return t.value[3:-3]
        if t.kind == "name":
            self.i += 1
            consts = {"true": True, "false": False, "null": None}
            return consts[t.value] if t.value in consts else EnumValue(t.value)
        if t.value == "[":
            self.take("[")
            items = []
            while not self.peek("]"):
                items.append(self.value(const))
            self.take("]")
            return items
        if t.value == "{":
            self.take("{")
            obj: dict[str, Any] = {}
            while not self.peek("}"):
                key = self.take(kind="name").value
                self.take(":")
                obj[key] = self.value(const)
            self.take("}")
            return obj
        raise GraphQLError(f"Syntax Error: unexpected {t.value or '<EOF>'!r} at offset {t.pos}")


def parse(source: str) -> Document:
    return Parser(source).document()


# --------------------------------------------------------------------------------------------
# Execution
@dataclass
class Execution:
    doc: Document
    variables: dict[str, Any]
    resolve_usage: Any  # (args) -> dict with __typename

    def resolve_value(self, v: Any) -> Any:
        if isinstance(v, Var):
            if v.name not in self.variables:
                raise GraphQLError(f"Variable '${v.name}' is not defined by the operation")
            return self.variables[v.name]
        if isinstance(v, EnumValue):
            return v.name
        if isinstance(v, list):
            return [self.resolve_value(x) for x in v]
        if isinstance(v, dict):
            return {k: self.resolve_value(x) for k, x in v.items()}
        return v

    def included(self, directives: list[tuple[str, dict[str, Any]]]) -> bool:
        for name, args in directives:
            cond = bool(self.resolve_value(args.get("if")))
            if name == "skip" and cond:
                return False
            if name == "include" and not cond:
                return False
        return True

    def collect(
        self, selections: list[Any], type_name: str, seen: set[str] | None = None
    ) -> list[Field]:
        """The fields that apply to an object of ``type_name``, fragments expanded."""
        seen = seen or set()
        out: list[Field] = []
        for sel in selections:
            if not self.included(sel.directives):
                continue
            if isinstance(sel, Field):
                out.append(sel)
            elif isinstance(sel, InlineFragment):
                if self.applies(sel.type_condition, type_name):
                    out += self.collect(sel.selections, type_name, seen)
            else:
                if sel.name not in self.doc.fragments:
                    raise GraphQLError(f'Unknown fragment "{sel.name}"')
                if sel.name in seen:
                    raise GraphQLError(f'Cannot spread fragment "{sel.name}" within itself')
                cond, sub = self.doc.fragments[sel.name]
                if self.applies(cond, type_name):
                    out += self.collect(sub, type_name, seen | {sel.name})
        return out

    @staticmethod
    def applies(condition: str | None, type_name: str) -> bool:
        if condition is None or condition == type_name:
            return True
        if condition not in SCHEMA and condition not in UNIONS:
            raise GraphQLError(f'Unknown type "{condition}"')
        return type_name in UNIONS.get(condition, set())

    def run(self, selections: list[Any], type_name: str, obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.collect(selections, type_name):
            key = f.alias or f.name
            if f.name == "__typename":
                out[key] = type_name
                continue
            fields = SCHEMA[type_name]
            if f.name not in fields:
                raise GraphQLError(
                    f"Cannot query field '{f.name}' on type '{type_name}'",
                    error_type="GRAPHQL_VALIDATION_FAILED",
                )
            ftype = fields[f.name]
            if f.name == "appResourceUsage":
                value = self.resolve_usage({k: self.resolve_value(v) for k, v in f.args.items()})
            else:
                if f.args:
                    raise GraphQLError(f"Unknown argument on field '{type_name}.{f.name}'")
                # the namespace objects (Query.ecosystem, .devConsole) always resolve
                value = obj.get(f.name, {} if ftype in SCHEMA and ftype.endswith("Query") else None)
            out[key] = self.complete(f, ftype, value)
        return out

    def complete(self, f: Field, ftype: str, value: Any) -> Any:
        is_list = ftype.startswith("[")
        base = ftype.strip("[]")
        if base in SCALARS:
            if f.selections:
                raise GraphQLError(
                    f"Field '{f.name}' must not have a selection since type '{base}' has no subfields"
                )
            return value
        if not f.selections:
            raise GraphQLError(
                f"Field '{f.name}' of type '{base}' must have a selection of subfields"
            )
        if value is None:
            return None

        def one(v: dict[str, Any]) -> dict[str, Any]:
            concrete = v.get("__typename", base) if base in UNIONS else base
            return self.run(f.selections or [], concrete, v)

        return [one(v) for v in value] if is_list else one(value)


def select_operation(doc: Document, name: str | None) -> Operation:
    if name:
        for op in doc.operations:
            if op.name == name:
                return op
        raise GraphQLError(f'Unknown operation named "{name}"')
    if len(doc.operations) > 1:
        raise GraphQLError("Must provide operation name if query contains multiple operations")
    return doc.operations[0]


def coerce_variables(op: Operation, given: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (type_text, default, has_default) in op.variables.items():
        if name in given and given[name] is not None:
            out[name] = given[name]
        elif has_default:
            out[name] = default
        elif type_text.endswith("!"):
            raise GraphQLError(
                f"Variable '${name}' of required type '{type_text}' was not provided."
            )
        else:
            out[name] = None
    return out


# --------------------------------------------------------------------------------------------
# Data
def app_sites(seed: int, app_id: str) -> list[str]:
    n = 2 + rng(seed, "forge-sites", app_id).randint(0, 1)
    return [
        f"ari:cloud:jira::site/{uuid.UUID(stable_id(seed, 'forge-site', app_id, i, length=32))}"
        for i in range(n)
    ]


def environment_id(seed: int, app_id: str, env: str) -> str:
    return str(uuid.UUID(stable_id(seed, "forge-env", app_id, env, length=32)))


def unit_of(resource: str) -> str:
    return UNITS.get(resource, "units")


def site_usage(
    seed: int, app_id: str, resource: str, day: date, site: str, n_sites: int = 1
) -> Decimal:
    """One site's tokens on ``day``. Function compute averages 3,500 GB-seconds a day per app
    (split over its sites): a 30-day month runs just over the free 100,000."""
    r = rng(seed, "forge-usage", app_id, resource, day, site)
    if resource == "FUNCTION_COMPUTE":
        value = Decimal(str(round(r.uniform(3000, 4000) / n_sites, 3)))
    else:
        value = Decimal(str(round(r.uniform(0.001, 0.05), 6)))
    return value.quantize(_Q)


def day_groups(
    seed: int, app_id: str, resource: str, day: date, sites: list[str], group_by: str | None
) -> list[tuple[str | None, Decimal]]:
    """(group value, tokens) for one day: one flat total, or one entry per site/environment."""
    per_site = [(s, site_usage(seed, app_id, resource, day, s, len(sites))) for s in sites]
    total = sum((q for _, q in per_site), Decimal(0))
    if group_by is None:
        return [(None, total)]
    if group_by == "CONTEXT_ARI":
        return [(s, q) for s, q in per_site]
    out: list[tuple[str | None, Decimal]] = []
    left = total
    for env, share in ENVIRONMENTS:
        q = left if share is None else (total * share).quantize(_Q)
        left -= q
        out.append((environment_id(seed, app_id, env), q))
    return out


def usage_items(
    seed: int,
    app_id: str,
    resource: str,
    days: list[date],
    context_aris: list[str] | None,
    group_by: str | None,
) -> list[dict[str, Any]]:
    """resourceUsage entries for ``days`` (flat when ``group_by`` is None)."""
    sites = list(context_aris) if context_aris else app_sites(seed, app_id)
    unit = unit_of(resource)
    items: list[dict[str, Any]] = []
    for d in days:
        groups = day_groups(seed, app_id, resource, d, sites, group_by)
        if group_by is None:
            items.append(
                {
                    "period": d.isoformat(),
                    "resolution": "ONE_DAY",
                    "tokensConsumed": f"{groups[0][1]:.6f}",
                    "tokenUnit": unit,
                }
            )
        else:
            items.append(
                {
                    "period": d.isoformat(),
                    "resolution": "ONE_DAY",
                    "groups": [
                        {
                            "groupBy": group_by,
                            "groupValue": g,
                            "tokensConsumed": f"{q:.6f}",
                            "tokenUnit": unit,
                        }
                        for g, q in groups
                    ],
                }
            )
    return items


def _parse_dt(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise GraphQLError(f"filters.interval.{name} must be a DateTime string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GraphQLError(f"filters.interval.{name} {value!r} is not a valid DateTime") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _take_queued(state: dict[str, Any], key: str) -> dict[str, Any] | None:
    queue = state.get(key) or []
    if not queue:
        return None
    item = queue[0]
    item["count"] = int(item.get("count", 1)) - 1
    if item["count"] <= 0:
        queue.pop(0)
    return item


def register(sb: Sandbox) -> None:
    def state() -> dict[str, Any]:
        return sb.state.setdefault("forge", {})

    def rate_limited(account: str) -> float | None:
        """Seconds until a slot frees when ``account`` is above the limit, else None (and the
        request is counted)."""
        with sb.lock:
            limit = state().get("rate_limit", DEFAULT_RATE_LIMIT)
            if not limit:
                return None
            window = float(limit["per_seconds"])
            now = time.monotonic()
            # accepted requests per account (kept in the state, so a reset clears them too)
            q = state().setdefault("_arrivals", {}).setdefault(account, deque())
            while q and q[0] <= now - window:
                q.popleft()
            if len(q) >= int(limit["max_requests"]):
                return q[0] + window - now
            q.append(now)
            return None

    def resolve_usage(args: dict[str, Any]) -> dict[str, Any]:
        st = state()
        app_id = args.get("appId")
        filters = args.get("filters")
        group_by = args.get("groupBy")
        if not isinstance(app_id, str) or not app_id:
            raise GraphQLError("argument 'appId' of type 'ID!' is required")
        if not isinstance(filters, dict):
            raise GraphQLError(
                "argument 'filters' of type 'DevConsoleAppResourceUsageFiltersInput!' is required"
            )
        resource = filters.get("resource")
        if not isinstance(resource, str) or not resource:
            raise GraphQLError("filters.resource is required")
        interval = filters.get("interval")
        if not isinstance(interval, dict):
            raise GraphQLError("filters.interval is required")
        start, end = (
            _parse_dt(interval.get("start"), "start"),
            _parse_dt(interval.get("end"), "end"),
        )
        start = start.astimezone(UTC)
        if end < start:
            raise GraphQLError("filters.interval.end is before start")
        page = filters.get("page", 1)
        page = 1 if page is None else page
        if not isinstance(page, int) or page < 1:
            raise GraphQLError("filters.page must be an integer >= 1")
        aris = filters.get("contextAris") or []
        if not isinstance(aris, list) or not all(isinstance(a, str) and a for a in aris):
            raise GraphQLError("filters.contextAris must be a list of ARIs")
        if group_by is not None and group_by not in GROUP_BY_VALUES:
            raise GraphQLError(f"Value {group_by!r} does not exist in 'DevConsoleGroupBy' enum.")
        if group_by is None and aris:
            group_by = "CONTEXT_ARI"  # the API's automatic grouping
        page_size = int(st.get("page_size", DEFAULT_PAGE_SIZE))
        typename = FLAT if group_by is None else GROUPED
        pagination = {"page": page, "pageSize": page_size}

        def error(
            status: int, message: str, error_type: str, identifier: str | None = None
        ) -> dict[str, Any]:
            return {
                "__typename": typename,
                "resourceUsage": None,
                "pagination": pagination,
                "error": {
                    "message": message,
                    "identifier": identifier or f"sandbox-{uuid.uuid4().hex[:8]}",
                    "extensions": {"errorType": error_type, "statusCode": status},
                },
            }

        with sb.lock:
            injected = _take_queued(st, "inband_errors")
        if injected is not None:
            return error(
                int(injected.get("statusCode", 500)),
                str(injected.get("message", "Internal server error")),
                str(injected.get("errorType", "INTERNAL_SERVER_ERROR")),
                injected.get("identifier"),
            )
        known = st.get("apps")
        if known is not None and app_id not in known:
            return error(404, f"App {app_id} not found or not owned by the caller", "NOT_FOUND")
        today = sb.now().astimezone(UTC).date()
        end = end.astimezone(UTC)
        last = end.date()
        if end.time() == dt_time(0) and end > start:  # an exclusive midnight end
            last -= timedelta(days=1)
        first = start.date()
        lookback = st.get("lookback_days", 60)
        if lookback is not None:
            first = max(first, today - timedelta(days=int(lookback)))
        last = min(last, today - timedelta(days=1))
        days = (
            [first + timedelta(days=i) for i in range((last - first).days + 1)]
            if last >= first
            else []
        )
        items = usage_items(sb.seed, app_id, resource, days, aris, group_by)
        return {
            "__typename": typename,
            "resourceUsage": items[(page - 1) * page_size : page * page_size],
            "pagination": pagination,
            "error": None,
        }

    @sb.route("forge", "POST", "/forge/graphql/?")
    def graphql(req: httpx.Request, _p: dict[str, str]) -> httpx.Response:
        account = _basic_email(req.headers.get("Authorization"), sb)
        if account is None:
            return json_response(
                401, {"message": "Unauthorized: basic auth with email and API token required"}
            )
        wait = rate_limited(account)
        if wait is not None:
            sb.record("forge", {"account": account, "status": 429, "t": time.time()})
            return json_response(
                429,
                {
                    "errors": [
                        {
                            "message": "Rate limit exceeded",
                            "extensions": {"statusCode": 429, "errorType": "RATE_LIMITED"},
                        }
                    ]
                },
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        try:
            body = json.loads(req.content or b"null")
        except ValueError:
            return json_response(400, {"errors": [{"message": "request body is not JSON"}]})
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return json_response(
                400, {"errors": [{"message": "request body needs a 'query' string"}]}
            )
        variables = body.get("variables") or {}
        entry = {
            "account": account,
            "operation": body.get("operationName"),
            "variables": variables,
            "user_agent": req.headers.get("User-Agent"),
            "experimental_api": req.headers.get("X-ExperimentalAPI"),
            "t": time.time(),
        }
        st = state()
        expected = st.get("experimental_api")
        header = req.headers.get("X-ExperimentalAPI")
        try:
            if not header or (expected is not None and header != expected):
                raise GraphQLError(
                    "appResourceUsage is experimental: pass the X-ExperimentalAPI header",
                    400,
                    "EXPERIMENTAL_API_REQUIRED",
                )
            with sb.lock:
                injected = _take_queued(st, "graphql_errors")
            if injected is not None:
                raise GraphQLError(
                    str(injected.get("message", "Internal server error")),
                    int(injected.get("statusCode", 500)),
                    str(injected.get("errorType", "INTERNAL_SERVER_ERROR")),
                )
            if not isinstance(variables, dict):
                raise GraphQLError("'variables' must be an object")
            doc = parse(body["query"])
            op = select_operation(doc, body.get("operationName"))
            if op.kind != "query":
                raise GraphQLError(f"{op.kind} is not supported here")
            ex = Execution(doc, coerce_variables(op, variables), resolve_usage)
            data = ex.run(op.selections, "Query", {})
        except GraphQLError as exc:
            sb.record("forge", {**entry, "status": 200, "errors": [exc.message]})
            return json_response(200, {"data": None, "errors": [exc.as_dict()]})
        sb.record("forge", {**entry, "status": 200})
        return json_response(200, {"data": data})


def _basic_email(header: str | None, sb: Sandbox) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        email, _, token = base64.b64decode(header[6:].strip()).decode().partition(":")
    except ValueError:
        return None
    if email != sb.API_KEYS["forge_email"] or token != sb.API_KEYS["forge"]:
        return None
    return email


def demo_usage(seed: int, settings: UsageSettings, day: date) -> list[UsageRow]:
    """The normalized rows the sandbox reports for the configured apps on ``day``: what the demo
    ledger is seeded from (sandbox/demo_ledger.py)."""
    from usage_orchestration.providers.forge import (
        FlatUsage,
        GroupedUsage,
        UsageResponse,
        effective_group_by,
        normalize,
    )
    from usage_orchestration.providers.forge import ForgeClient as _Client

    rows: list[UsageRow] = []
    for app in settings.forge.apps:
        group_by = effective_group_by(app)
        for resource in app.resources:
            items = usage_items(seed, app.app_id, resource, [day], app.context_aris, group_by)
            if group_by is None:
                parsed = UsageResponse(
                    __typename=FLAT, flatUsage=[FlatUsage.model_validate(i) for i in items]
                )
            else:
                parsed = UsageResponse(
                    __typename=GROUPED, groupedUsage=[GroupedUsage.model_validate(i) for i in items]
                )
            for point in _Client._points(parsed, f"app {app.app_id}", day.isoformat()):
                rows.append(normalize(point, app, resource, settings.forge.account_id))
    return rows
