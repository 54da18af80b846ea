"""Operator commands: silences from the CLI take effect on the outbox; the sandbox command serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime

import pytest

from usage_orchestration.alerts.model import Alert, AlertKind
from usage_orchestration.alerts.outbox import Outbox
from usage_orchestration.cli import main
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.store import Warehouse


def test_silence_add_list_remove(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    monkeypatch.setenv("USAGE_WAREHOUSE_URL", url)
    Warehouse(url).ensure_schema()  # the pipeline's warehouse (a missing one is refused)
    assert (
        main(
            [
                "silence",
                "add",
                "--subject",
                "entity/support-bot",
                "--for",
                "4h",
                "--reason",
                "known overrun",
            ]
        )
        == 0
    )
    assert "silence 1:" in capsys.readouterr().out
    assert main(["silence", "add", "--for", "4h", "--reason", "everything"]) == 2  # refused

    wh = Warehouse(url)
    outbox = Outbox(wh.engine, load_settings().alerts)
    a = Alert(
        kind=AlertKind.BUDGET_THRESHOLD,
        severity="critical",
        subject="entity/support-bot",
        period=datetime.now(UTC).strftime("%Y-%m"),
        threshold="100pct",
        summary="over budget",
    )
    outbox.sync([a], kinds=["budget_threshold"], now=datetime.now(UTC))
    row = outbox.get(a.dedup_key)
    assert row is not None and row["state"] == "silenced" and row["trigger_status"] == "skipped"

    assert main(["silence", "list"]) == 0
    out = capsys.readouterr().out
    assert "active" in out and "known overrun" in out
    assert main(["alerts", "list", "--state", "silenced"]) == 0
    assert a.dedup_key in capsys.readouterr().out
    assert main(["silence", "remove", "1"]) == 0
    assert main(["silence", "remove", "1"]) == 1


def test_sandbox_command_serves_on_loopback(tmp_path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "usage_orchestration.cli",
            "sandbox",
            "--port",
            "0",
            "--seed",
            "3",
            "--ledger-url",
            f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        url = line.split()[3]
        with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=10) as resp:
            assert json.load(resp) == {"ok": True, "seed": 3}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
