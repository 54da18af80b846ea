"""The shared HTTP policy of every provider client.

Timeouts on every request; retries only for what is retryable (429, 5xx, connection errors,
timeouts, and in-band errors a client marks retryable) with ``Retry-After`` honoured (seconds or
HTTP date; on a retry status and on a retryable in-band error alike) under a cap and no sleep
after the last attempt; a proactive request budget shared across processes (a file under
``state_dir``, or any ``RequestBudgets`` the caller passes); pagination guards; redirects
refused, never followed; and errors that name provider, account, window and status while never
carrying a secret.
"""

from __future__ import annotations

import json
import logging
import random
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypedDict
from urllib.parse import urlsplit

import httpx
from filelock import FileLock

from usage_orchestration.providers.records import DayCoverage, FetchResult, FetchStats, UsageRow
from usage_orchestration.settings.secrets import redact, secret_values

# httpx logs every request URL at INFO; some URLs (a Slack webhook) are secrets themselves.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

DEFAULT_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ProviderError(Exception):
    """A request to a provider failed. The message names provider, account, window and status."""

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        account: str | None = None,
        endpoint: str | None = None,
        window: str | None = None,
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        self.provider = provider
        self.retry_after_s = retry_after_s  # the provider asked to wait this long (Retry-After)
        self.account = account
        self.endpoint = endpoint
        self.window = window
        self.status = status
        self.retryable = retryable
        self.detail = message
        parts = [provider]
        if account:
            parts.append(f"account {account}")
        if window:
            parts.append(f"window {window}")
        where = ", ".join(parts)
        status_txt = f"HTTP {status} " if status is not None else ""
        endpoint_txt = f"from {endpoint}" if endpoint else ""
        head = f"{status_txt}{endpoint_txt}".strip()
        super().__init__(f"{where}: {head + ': ' if head else ''}{message}")


class ProviderResponseError(ProviderError):
    """A provider answered 2xx with a body that does not follow its contract."""


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


class RetrySettings(Protocol):
    """What a provider's (or the ledger's) settings say about retries."""

    max_attempts: int
    retry_after_cap_s: float


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    retry_after_cap_s: float = 60.0
    jitter: bool = True

    @classmethod
    def of(cls, settings: RetrySettings, **overrides: Any) -> RetryPolicy:
        """The policy ``settings`` configure (attempts and the ``Retry-After`` cap); the rest
        default unless ``overrides`` set it."""
        return cls(
            max_attempts=settings.max_attempts,
            retry_after_cap_s=settings.retry_after_cap_s,
            **overrides,
        )

    def backoff_s(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based), exponential and capped."""
        delay = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        if self.jitter:
            delay *= 0.5 + random.random() / 2
        return delay

    def delay_s(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap_s)
        return self.backoff_s(attempt)


class RequestBudget(Protocol):
    """Blocks until one more request may be sent under the provider's rate limit."""

    def acquire(self) -> float:
        """Take one request slot; return the seconds spent waiting for it."""
        ...


class RequestBudgets(Protocol):
    """Where a deployment keeps its request budgets: one per (provider, account). The file
    budgets under ``state_dir`` (``SharedRateBudget``) are the embedded default; the warehouse
    keeps one that every host sharing it draws from (``warehouse/request_budget.py``)."""

    def budget(
        self, provider: str, account: str, max_requests: int, per_seconds: float
    ) -> RequestBudget:
        """The budget of ``max_requests`` per ``per_seconds`` of one provider account."""
        ...


class UnlimitedBudget:
    def acquire(self) -> float:
        return 0.0


class SharedRateBudget:
    """A sliding-window limit of ``max_requests`` per ``per_seconds``, shared by every process
    that uses the same ``path``: the send times live in a small JSON file under a file lock.

    Concurrent Dagster runs (each its own process) therefore share one budget per provider
    account, so together they stay under the provider's documented limit.
    """

    def __init__(
        self,
        path: str | Path,
        max_requests: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_requests < 1 or per_seconds <= 0:
            raise ValueError("a request budget needs max_requests >= 1 and per_seconds > 0")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_requests = max_requests
        self.per_seconds = per_seconds
        self._lock = FileLock(str(self.path) + ".lock")
        self._clock = clock
        self._sleep = sleep

    def _read(self) -> list[float]:
        try:
            data = json.loads(self.path.read_text() or "[]")
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        return [float(x) for x in data if isinstance(x, int | float)]

    def acquire(self) -> float:
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                sent = [t for t in self._read() if t > now - self.per_seconds]
                if len(sent) < self.max_requests:
                    sent.append(now)
                    self.path.write_text(json.dumps(sent))
                    return waited
                wait = min(sent) + self.per_seconds - now
            wait = max(wait, 0.001)
            self._sleep(wait)
            waited += wait


@dataclass
class HttpStats:
    requests: int = 0
    retries: int = 0
    budget_wait_s: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


class PageGuard:
    """Fails loudly on a repeated cursor/offset and on more pages than ``max_pages``."""

    def __init__(self, provider: str, max_pages: int, *, account: str | None, window: str | None):
        self.provider = provider
        self.max_pages = max_pages
        self.account = account
        self.window = window
        self._seen: set[Any] = set()

    def visit(self, token: Any) -> None:
        if token in self._seen:
            raise ProviderResponseError(
                self.provider,
                f"pagination repeated the cursor/offset {token!r}; refusing to loop",
                account=self.account,
                window=self.window,
            )
        if len(self._seen) >= self.max_pages:
            raise ProviderResponseError(
                self.provider,
                f"more than {self.max_pages} pages for one request window; raise max_pages "
                "or narrow the window",
                account=self.account,
                window=self.window,
            )
        self._seen.add(token)

    @property
    def pages(self) -> int:
        return len(self._seen)


# A response's decoded JSON body, parsed once and shared by the policy (is it readable?), the
# in-band error check (GraphQL) and the client's parser: a year's page of 5,000 records is
# ~3 MB, and parsing it three times was a third of a client's own time.
_BODIES: weakref.WeakKeyDictionary[httpx.Response, Any] = weakref.WeakKeyDictionary()


def body_json(response: httpx.Response) -> Any:
    """The response body decoded as JSON (parsed on the first call only); ``ValueError`` (a
    ``JSONDecodeError`` or ``UnicodeDecodeError``) when it is not JSON, on every call."""
    try:
        ok, value = _BODIES[response]
    except KeyError:
        try:
            ok, value = True, json.loads(response.content)
        except ValueError as exc:
            ok, value = False, exc
        _BODIES[response] = (ok, value)
    if not ok:
        raise value
    return value


def _error_message(
    response: httpx.Response, clean: Callable[[str], str] = lambda text: text
) -> str:
    """A short human message from an error body, whatever its shape; ``clean`` (the secrets'
    masking) runs before the cut, so that no secret survives half cut."""
    try:
        body = body_json(response)
    except ValueError:
        text = clean(response.text.strip())
        return text[:300] if text else response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "msg"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return clean(value)[:300]
            if isinstance(value, list) and value:  # FastAPI-style 422 detail list
                parts = []
                for item in value[:5]:
                    if isinstance(item, dict):
                        loc = ".".join(str(x) for x in item.get("loc", []))
                        parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
                    else:
                        parts.append(str(item))
                return clean("; ".join(parts))[:300]
    return clean(json.dumps(body))[:300]


def offending_item(response: httpx.Response, loc: tuple[Any, ...], list_key: str, key: str) -> Any:
    """``key`` of the item of the body's ``list_key`` that a validation error's ``loc`` points
    into (pydantic only gives its index), so the error can name the record; None otherwise."""
    if len(loc) < 2 or loc[0] != list_key or not isinstance(loc[1], int):
        return None
    try:
        item = body_json(response)[list_key][loc[1]]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return item.get(key) if isinstance(item, dict) else None


# A 2xx body up to this size keeps its decoded tree for the client's parser (decoded once); a
# larger one (a Phala page of 5,000 records) is only checked, so the tree (~3x the body in
# Python objects) is never held beside the models its client builds from the bytes.
KEEP_DECODED_MAX_BYTES = 1 << 20


def _drop_object(_pairs: list[tuple[str, Any]]) -> None:
    return None


def _redirect_message(response: httpx.Response, redact: Callable[[str], str]) -> str:
    """A redirect answer: where it points (scheme, host and path only: a query or fragment may
    carry a token) and what it usually means."""
    target = urlsplit(response.headers.get("Location", ""))
    where = f"{target.scheme}://{target.netloc}{target.path}" if target.netloc else target.path
    return redact(
        f"HTTP {response.status_code} redirect to {where or '(no Location)'}: the endpoint "
        "moved or asks for a login; check the base URL and the credentials (not followed)"
    )


def _unreadable_body(response: httpx.Response) -> str | None:
    """Why a 2xx body cannot be read as JSON (empty, truncated, garbled), or None if it can."""
    if not response.content.strip():
        return "2xx response with an empty body"
    try:
        if len(response.content) <= KEEP_DECODED_MAX_BYTES:
            body_json(response)
        else:  # a large page: checked without keeping its tree (its parser reads the bytes)
            json.loads(response.content, object_pairs_hook=_drop_object)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return (
            f"2xx response body is truncated or not JSON ({len(response.content)} bytes; "
            f"{type(exc).__name__} at {getattr(exc, 'pos', '?')})"
        )
    return None


class Closing:
    """A context manager that calls ``close`` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HttpOptions(TypedDict, total=False):
    """The options of ``ProviderHttp`` that a provider client takes and passes on unchanged."""

    timeout_s: float
    retry: RetryPolicy | None
    budget: RequestBudget | None
    transport: httpx.BaseTransport | None
    sleep: Callable[[float], None] | None


class ProviderHttp(Closing):
    """One provider's HTTP session: base URL, fixed headers, timeout, retries, request budget."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
        retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
        transport: httpx.BaseTransport | None = None,
        secrets: Iterable[str] = (),
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.provider = provider
        self.retry = retry or RetryPolicy()
        self.budget = budget or UnlimitedBudget()
        self.retry_statuses = frozenset(retry_statuses)
        self.stats = HttpStats()
        # its own secrets and every other one the environment holds (an API may echo anything)
        self._secrets = sorted(
            {*(s for s in secrets if s), *secret_values()}, key=len, reverse=True
        )
        self._sleep = sleep or time.sleep
        self._client = httpx.Client(
            base_url=base_url,
            headers=dict(headers or {}),
            auth=auth,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _retry_after(
        self, response: httpx.Response, last: str, fail: Callable[..., ProviderError]
    ) -> float | None:
        """The response's ``Retry-After`` in seconds (None when absent or unreadable); beyond
        the cap, a retryable error carrying the wait instead, so the caller retries later."""
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None and retry_after > self.retry.retry_after_cap_s:
            # longer than a step should sleep: the caller retries the step later
            raise fail(
                f"asked to retry after {retry_after:.0f} s (longer than the "
                f"{self.retry.retry_after_cap_s:.0f} s cap); last error: {last}",
                status=response.status_code,
                retryable=True,
                retry_after_s=retry_after,
            )
        return retry_after

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json_body: Any = None,
        account: str | None = None,
        window: str | None = None,
        inband_error: Callable[[httpx.Response], tuple[bool, str] | None] | None = None,
        error_status: Callable[[int], str | None] | None = None,
        expect_json: bool = True,
    ) -> httpx.Response:
        """Send with the policy. ``inband_error`` inspects a 2xx response and returns
        ``(retryable, message)`` when the body itself reports an error (GraphQL). With
        ``expect_json`` a 2xx whose body is truncated or not JSON is retried (every attempt counts
        against the request budget) and, once the attempts are spent, fails as retryable."""
        # Long on purpose: the branches of one attempt are the retry policy, and their order
        # (transport error, retry status, other 4xx/5xx, unreadable 2xx, in-band error) is the
        # contract the hostile suites pin; split up, that order would be spread over helpers.
        # every error of this request names the same provider, account, endpoint and window
        fail = partial(
            ProviderError,
            self.provider,
            account=account,
            endpoint=f"{method} {path}",
            window=window,
        )
        last: str = ""
        last_status: int | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            self.stats.budget_wait_s += self.budget.acquire()
            self.stats.requests += 1
            retry_after: float | None = None
            try:
                response = self._client.request(method, path, params=params, json=json_body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last, last_status = f"{type(exc).__name__}: {self.redact(str(exc))}", None
            else:
                status = response.status_code
                self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
                if status in self.retry_statuses:
                    last, last_status = _error_message(response, self.redact), status
                    retry_after = self._retry_after(response, last, fail)
                elif status >= 400:
                    hint = error_status(status) if error_status else None
                    message = _error_message(response, self.redact)
                    raise fail(f"{message}{' (' + hint + ')' if hint else ''}", status=status)
                elif 300 <= status < 400:
                    # redirects are not followed (a credential must not go to another host):
                    # a moved endpoint or a login page, final, never "a 2xx with no body"
                    raise fail(_redirect_message(response, self.redact), status=status)
                elif expect_json and (broken := _unreadable_body(response)) is not None:
                    # a cut or garbled 2xx is a transport accident, not the provider's answer:
                    # retried like a 5xx (a body that parses but breaks the schema stays final)
                    last, last_status = broken, status
                else:
                    verdict = inband_error(response) if inband_error else None
                    if verdict is None:
                        return response
                    retryable, message = verdict
                    if not retryable:
                        raise fail(self.redact(message), status=status)
                    last, last_status = self.redact(message), status
                    # a GraphQL 429 inside a 200 may carry Retry-After too: the same wait
                    retry_after = self._retry_after(response, last, fail)
            if attempt == self.retry.max_attempts:
                break  # no sleep after the last attempt
            self.stats.retries += 1
            self._sleep(self.retry.delay_s(attempt, retry_after))
        raise fail(
            f"gave up after {self.retry.max_attempts} attempts; last error: {last}",
            status=last_status,
            retryable=True,
        )


class ProviderClient(Closing):
    """Base of the provider clients: owns one ``ProviderHttp`` session (``self.http``) and is a
    context manager that closes it."""

    http: ProviderHttp
    _stats: FetchStats | None = None
    # the constructor's options that the provider's settings hold under the same names
    SETTINGS_OPTIONS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_options(cls, settings: Any) -> dict[str, Any]:
        """The constructor options ``settings`` (the provider's settings) hold under the same
        names, each passed on as it is."""
        return {name: getattr(settings, name) for name in cls.SETTINGS_OPTIONS}

    @property
    def stats(self) -> FetchStats:
        """What this client's fetches cost so far (``sync_stats`` brings it up to date)."""
        if self._stats is None:
            self._stats = FetchStats()
        return self._stats

    def sync_stats(self) -> None:
        s = self.stats
        s.requests, s.retries = self.http.stats.requests, self.http.stats.retries
        s.budget_wait_s = self.http.stats.budget_wait_s

    def result(self, rows: list[UsageRow], coverage: list[DayCoverage]) -> FetchResult:
        """A fetch's rows and coverage with what it cost in requests and retries."""
        return FetchResult(
            rows=rows,
            coverage=coverage,
            requests=self.http.stats.requests,
            retries=self.http.stats.retries,
            budget_wait_s=self.http.stats.budget_wait_s,
        )

    def close(self) -> None:
        self.http.close()
