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


def test_silence_of_an_unknown_kind_is_refused(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import ValidationError

    from usage_orchestration.settings.alerts import ALERT_KINDS, SilenceRule

    assert set(ALERT_KINDS) == {k.value for k in AlertKind}  # one list of kinds
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    monkeypatch.setenv("USAGE_WAREHOUSE_URL", url)
    Warehouse(url).ensure_schema()
    # a typo would silence nothing while the operator believes it silences something
    assert main(["silence", "add", "--kind", "budget", "--for", "1h", "--reason", "x"]) == 2
    out = capsys.readouterr().out
    assert "unknown alert kind 'budget'" in out and "budget_threshold" in out
    assert Outbox(Warehouse(url).engine, load_settings().alerts).list_silences() == []
    with pytest.raises(ValidationError, match="unknown alert kind"):
        SilenceRule(kind="anomalies", ends_at=datetime(2030, 1, 1, tzinfo=UTC))


def test_resend_requeues_a_rejected_delivery_without_sql(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usage_orchestration.alerts.service import build_channels
    from usage_orchestration.sandbox import Sandbox
    from usage_orchestration.sandbox.core import Fault

    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    monkeypatch.setenv("USAGE_WAREHOUSE_URL", url)
    monkeypatch.setenv("USAGE_ALERTS__PAGERDUTY_EVENTS_URL", "http://sandbox/pagerduty/v2/enqueue")
    settings = load_settings()
    wh = Warehouse(url)
    wh.ensure_schema()
    outbox = Outbox(wh.engine, settings.alerts)
    sandbox = Sandbox(seed=7)
    channels = build_channels(
        settings.alerts,
        pagerduty_routing_key="sandbox-routing-key-000000000000",
        slack_webhook_url="",
        transport=sandbox.transport(),
    )
    now = datetime.now(UTC)
    a = Alert(
        kind=AlertKind.BUDGET_THRESHOLD,
        severity="critical",
        subject="entity/support-bot",
        period=now.strftime("%Y-%m"),
        threshold="100pct",
        summary="over budget",
    )
    outbox.sync([a], kinds=["budget_threshold"], now=now)
    sandbox.add_fault("pagerduty", Fault(status=400, count=1))  # e.g. a bad routing key
    outbox.deliver_pending(channels, now=now)
    assert outbox.get(a.dedup_key)["trigger_status"] == "rejected"  # type: ignore[index]
    assert sandbox.received("pagerduty") == []

    assert main(["alerts", "resend", a.dedup_key]) == 0  # the cause is fixed: send it again
    assert "re-queued the trigger" in capsys.readouterr().out
    outbox.deliver_pending(channels, now=datetime.now(UTC))  # the CLI's clock ran on
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == ["trigger"]
    assert main(["alerts", "resend", a.dedup_key]) == 1  # delivered: nothing to re-send
    assert main(["alerts", "resend", "usage-orchestration/nope"]) == 1

    # a rejected resolve is re-queued the same way, and goes to the channel that rejected it
    now = datetime.now(UTC)
    outbox.sync([], kinds=["budget_threshold"], now=now)
    sandbox.add_fault("pagerduty", Fault(status=400, count=1))
    outbox.deliver_pending(channels, now=now)
    assert outbox.get(a.dedup_key)["resolve_status"] == "rejected"  # type: ignore[index]
    assert main(["alerts", "resend", a.dedup_key]) == 0
    outbox.deliver_pending(channels, now=datetime.now(UTC))
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == ["trigger", "resolve"]
    assert outbox.get(a.dedup_key)["resolve_status"] == "delivered"  # type: ignore[index]
    outcomes = [(d["action"], d["outcome"]) for d in outbox.deliveries(a.dedup_key)]
    assert outcomes.count(("trigger", "requeued")) == 1
    assert outcomes.count(("resolve", "requeued")) == 1
