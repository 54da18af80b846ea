"""Shared fixtures: the sandbox (in-process and on loopback) and real databases.

Tests that touch the warehouse or the ledger use ``db_url`` (and ``ledger_url``), parametrized
over SQLite and, when ``USAGE_TEST_POSTGRES_URL`` is set, PostgreSQL: each test gets its own
PostgreSQL schema, dropped afterwards.

Every test runs with isolated settings (``isolated_settings``, autouse): no developer's
``usage_orchestration.yaml`` and no stray ``USAGE_*`` variable reaches ``load_settings()``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.schema import CreateSchema, DropSchema

from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import SETTINGS_FILE_ENV
from usage_orchestration.warehouse.store import normalize_url

PG_ENV = "USAGE_TEST_POSTGRES_URL"
PG_URL = os.environ.get(PG_ENV)

_BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])

# Variables of the test suite itself (e.g. USAGE_TEST_POSTGRES_URL): read by the suite, never by
# load_settings (settings/__init__.py skips them), so they survive the isolation.
TEST_ENV_PREFIX = "USAGE_TEST_"


@pytest.fixture(scope="session")
def empty_settings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An existing, empty YAML file: load_settings() reads it as "no settings" (a missing file
    would be an error), and it outranks any usage_orchestration.yaml in the working directory."""
    path = tmp_path_factory.mktemp("settings") / "empty.yaml"
    path.write_text("")
    return path


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, empty_settings_file: Path) -> None:
    """Settings come from the defaults and what the test itself sets, nothing else.

    Subprocess tests (test_demo.py, test_e2e_daemon.py) build their child's environment from
    os.environ minus USAGE_* and add the settings they need, so this does not take anything
    from them; a child that inherits os.environ whole gets the same empty file.
    """
    for name in list(os.environ):
        if name.startswith("USAGE_") and not name.startswith(TEST_ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(empty_settings_file))


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(seed=7)


@pytest.fixture
def sandbox_server(sandbox: Sandbox) -> Iterator[SandboxServer]:
    server = SandboxServer(sandbox).start()
    yield server
    server.stop()


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{normalize_url(base)}{sep}options=-csearch_path%3D{schema}"


def _make_db(kind: str, tmp_path: Path, name: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / (name + '.sqlite')}"
        return
    assert PG_URL is not None
    schema = f"t_{name}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(CreateSchema(schema))
    try:
        yield _pg_schema_url(PG_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(DropSchema(schema, cascade=True))
        admin.dispose()


@pytest.fixture(params=_BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """The warehouse URL (SQLite, or a fresh PostgreSQL schema)."""
    yield from _make_db(db_backend, tmp_path, "warehouse")


@pytest.fixture
def ledger_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """The credit ledger URL, on the same backend as ``db_url``."""
    yield from _make_db(db_backend, tmp_path, "ledger")


def pytest_report_header(config: pytest.Config) -> str:
    return f"databases: {', '.join(_BACKENDS)}" + (
        "" if PG_URL else f" (set {PG_ENV} for PostgreSQL)"
    )
