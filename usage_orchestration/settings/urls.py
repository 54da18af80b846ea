"""Validated URL and address types of the settings, and where relative paths resolve.

A bad value fails at load naming its key (pydantic puts the key in front of these messages);
the value itself is never repeated, since a URL may carry a password or a token.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated
from urllib.parse import SplitResult, urlsplit

from pydantic import AfterValidator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DB_BACKENDS = ("sqlite", "postgresql")
# Hosts that are this machine: never a real provider, PagerDuty or Dagster UI.
LOCAL_HOSTNAMES = ("localhost", "localhost.localdomain")


def split_url(value: str, kind: str = "a URL") -> SplitResult:
    """``value``'s parts, once it is ``kind`` without spaces whose port parses (the messages
    never repeat the value)."""
    if not value or value != value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"must be {kind} without spaces")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    return parts


def check_http_url(value: str) -> str:
    """An absolute http(s) URL with a host and no embedded credentials."""
    parts = split_url(value, "an http(s) URL")
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username or parts.password:
        raise ValueError("must not embed credentials (they come from the environment)")
    return value


def check_database_url(value: str) -> str:
    """A SQLAlchemy URL of a supported database (SQLite or PostgreSQL)."""
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(
            "is not a SQLAlchemy database URL (e.g. postgresql://user@host/db)"
        ) from None
    if url.get_backend_name() not in DB_BACKENDS:
        raise ValueError(f"database must be one of {', '.join(DB_BACKENDS)}")
    if url.get_backend_name() == "postgresql" and not url.database:
        raise ValueError("names no database")
    return value


def loopback_host(value: str) -> str:
    """A loopback IP address (``localhost`` is read as 127.0.0.1): the sandbox binds nothing
    else, so its fake credentials never answer on a network."""
    text = value.strip().strip("[]")
    if text in LOCAL_HOSTNAMES:
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(
            f"must be a loopback IP address such as 127.0.0.1, got {value!r}"
        ) from None
    if not address.is_loopback:
        raise ValueError(f"must be a loopback address, got {value!r}")
    return str(address)


def url_host(host: str, port: int) -> str:
    """``host:port`` for a URL (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


HttpUrl = Annotated[str, AfterValidator(check_http_url)]
DatabaseUrl = Annotated[str, AfterValidator(check_database_url)]
LoopbackHost = Annotated[str, AfterValidator(loopback_host)]


def is_local_url(value: str) -> bool:
    """True when an http(s) URL points at this machine (loopback or ``localhost``)."""
    host = (urlsplit(value).hostname or "").lower()
    if host in LOCAL_HOSTNAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def database_url(value: str) -> URL:
    return make_url(value)


def has_password(value: str) -> bool:
    try:
        return bool(make_url(value).password)
    except (ArgumentError, ValueError):
        return False


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def resolve_sqlite_url(value: str, base: Path) -> str:
    """A SQLite URL with a relative file path made absolute against ``base`` (other URLs and
    in-memory SQLite unchanged)."""
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        return value  # check_database_url names the key
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return value
    db = str(url.database)
    if db.startswith("file:") or Path(db).is_absolute():
        return value
    return url.set(database=str((base / db).resolve())).render_as_string(hide_password=False)


def resolve_path(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())
