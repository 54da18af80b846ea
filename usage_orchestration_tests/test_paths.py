"""Paths and instances that cannot be confused: relative paths resolve against the settings
file, the ledger opens read only, operator commands refuse a warehouse that is not there, a
throwaway Dagster instance is called out, and a taken sandbox port is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from usage_orchestration.cli import main
from usage_orchestration.ledger.sql import LedgerError, SqlLedger
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.server import PortTakenError, SandboxServer
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.store import Warehouse


def _settings_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "s.yaml").write_text(
        "state_dir: run/state\n"
        "warehouse_url: sqlite:///data/warehouse.sqlite\n"
        "ledger: {database_url: 'sqlite:///../ledger/ledger.sqlite'}\n"
    )
    return conf


def test_relative_paths_resolve_against_the_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _settings_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    seen = set()
    for cwd in (tmp_path, elsewhere, conf):
        monkeypatch.chdir(cwd)
        s = load_settings(os.path.relpath(conf / "s.yaml", cwd))
        seen.add((s.state_dir, s.warehouse_url, s.ledger.database_url))
    assert seen == {
        (
            str(conf / "run" / "state"),
            f"sqlite:///{conf / 'data' / 'warehouse.sqlite'}",
            f"sqlite:///{tmp_path / 'ledger' / 'ledger.sqlite'}",
        )
    }


def test_relative_paths_from_the_environment_use_the_same_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = _settings_dir(tmp_path)
    monkeypatch.setenv("USAGE_STATE_DIR", "other/state")
    monkeypatch.chdir(tmp_path)
    assert load_settings(conf / "s.yaml").state_dir == str(conf / "other" / "state")


def test_absolute_and_memory_urls_are_left_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'abs.sqlite'}"
    assert load_settings(warehouse_url=url).warehouse_url == url
    assert load_settings(warehouse_url="sqlite://").warehouse_url == "sqlite://"


def test_a_wrong_ledger_path_fails_without_creating_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "ledger.sqlite"
    (tmp_path / "no").mkdir()
    reader = SqlLedger(f"sqlite:///{missing}")
    with pytest.raises(LedgerError, match="unable to open database file"):
        reader.resource_types()
    assert list((tmp_path / "no").iterdir()) == []


def test_the_ledger_cannot_be_written(tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    w = Warehouse(url)  # any writer: creates the file with a table
    with w.engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    reader = SqlLedger(url)
    with pytest.raises(OperationalError, match="readonly"), reader.engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))


def test_the_ledger_cannot_be_written_on_either_backend(ledger_url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with Warehouse(ledger_url).engine.begin() as conn:  # the platform's writer
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    reader = SqlLedger(ledger_url)
    with pytest.raises(DBAPIError, match="(?i)read.?only"), reader.engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    reader.close()


@pytest.mark.parametrize("argv", [["alerts", "list"], ["silence", "list"]])
def test_operator_commands_refuse_a_missing_warehouse(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "nowhere" / "warehouse.sqlite"
    monkeypatch.setenv("USAGE_WAREHOUSE_URL", f"sqlite:///{path}")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(path) in err
    assert not path.exists()


def test_operator_commands_refuse_a_warehouse_without_the_pipelines_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.sqlite"
    path.touch()
    monkeypatch.setenv("USAGE_WAREHOUSE_URL", f"sqlite:///{path}")
    assert main(["alerts", "list"]) == 2
    assert "none of the pipeline's tables" in capsys.readouterr().err


def test_the_demo_says_when_no_dagster_home_is_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usage_orchestration import cli

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    cli._instance_note("demo")
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
    monkeypatch.setenv("DAGSTER_HOME", "/somewhere")
    cli._instance_note("demo")
    assert capsys.readouterr().err == ""


def test_a_taken_sandbox_port_is_refused(
    sandbox_server: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PortTakenError, match="another sandbox"):
        SandboxServer(Sandbox(), port=sandbox_server.port)
    argv = ["sandbox", "--port", str(sandbox_server.port), "--check-port"]
    assert main(argv) == 1
    assert "taken by another sandbox" in capsys.readouterr().err


def test_the_sandbox_binds_loopback_addresses_only() -> None:
    for host in ("0.0.0.0", "10.1.2.3", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            SandboxServer(Sandbox(), host=host)
