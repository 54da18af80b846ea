"""A page a tired person can act on: the owner, the runbook section of its kind, entity names
beside ids, a link to the failing asset at the failing partition, and a summary cut at a word
boundary that keeps the error's cause."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

from usage_orchestration.alerts import rules
from usage_orchestration.alerts.channels import Notification, OnCall, PagerDutyChannel, SlackChannel
from usage_orchestration.alerts.model import AlertKind
from usage_orchestration.settings import load_settings

RUNBOOK = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"
S = load_settings()


def _failure(message: str = "phala_usage: HTTP 503 from Phala Cloud") -> Notification:
    alert = rules.run_failure_alert(
        job_name="daily_usage_job",
        run_id="run-1",
        partition="2026-05-19",
        message=message,
        settings=S,
        assets=["phala_usage", "usage_reconciliation"],
    )
    return Notification.trigger_of(alert)


def test_every_kind_has_a_runbook_anchor() -> None:
    anchors = set(re.findall(r'<a id="([a-z_]+)"></a>', RUNBOOK.read_text()))
    assert {k.value for k in AlertKind} <= anchors


def test_pagerduty_event_names_owner_runbook_and_the_failing_partition() -> None:
    channel = PagerDutyChannel(
        "http://pd.invalid/v2/enqueue",
        "rk",
        oncall=OnCall(owner="team:finops", runbook_url="https://wiki.example/runbook.md"),
    )
    event = channel.event(_failure())
    details = event["payload"]["custom_details"]
    assert details["owner"] == "team:finops"
    assert details["runbook"] == "https://wiki.example/runbook.md#run_failure"
    hrefs = [link["href"] for link in event["links"]]
    assert hrefs[0].endswith("/runs/run-1")
    assert "http://127.0.0.1:3000/assets/phala_usage?partition=2026-05-19" in hrefs
    assert hrefs[-1] == "https://wiki.example/runbook.md#run_failure"
    channel.close()


def test_slack_message_names_owner_and_runbook_file_when_not_published() -> None:
    channel = SlackChannel("http://slack.invalid/hook", oncall=OnCall(owner="team:finops"))
    text = channel.message(_failure())["text"]
    assert "*owner:* team:finops" in text
    assert "*runbook:* docs/runbook.md#run_failure" in text
    assert "<http://127.0.0.1:3000/assets/usage_reconciliation?partition=2026-05-19|" in text
    channel.close()


def test_long_error_is_cut_at_a_word_with_its_cause_first() -> None:
    cause = "phala_usage: Phala Cloud account acct-7 day 2026-05-19 answered HTTP 503"
    n = _failure(cause + " | " + "traceback frame " * 200)
    assert len(n.summary) <= 1024 and n.summary.endswith("…")
    assert cause in n.summary
    assert n.summary[:-1].endswith(("frame", "traceback"))  # not in the middle of a word


def test_breaks_and_anomalies_name_the_entity_beside_its_id() -> None:
    names = {"bbbb": "Support Bot"}
    [brk] = rules.alerts_from_reconciliation_rows(
        [
            {
                "usage_date": date(2026, 5, 19),
                "provider": "phala",
                "entity_id": "bbbb",
                "resource_type": "compute",
                "status": "ledger_under",
                "within_tolerance": False,
                "expected_credits": Decimal(10),
                "recorded_credits": Decimal(4),
                "delta_credits": Decimal(-6),
            }
        ],
        S,
        names,
    )
    assert "Support Bot (bbbb)" in brk.summary and brk.details["entity_name"] == "Support Bot"
    [anomaly] = rules.alerts_from_anomaly_rows(
        [
            {
                "usage_date": date(2026, 5, 19),
                "entity_id": "bbbb",
                "resource_type": "compute",
                "impact_credits": Decimal(50),
                "direction": "spike",
                "credits": Decimal(80),
                "baseline_credits": Decimal(30),
            }
        ],
        S,
        names,
    )
    assert "Support Bot (bbbb)" in anomaly.summary


def test_pagerduty_fields_are_bounded_for_hostile_data() -> None:
    """Data decides the sizes (entity names, error texts, details): the event stays within
    PagerDuty's limits whatever it holds, and the cause at the start of the summary survives."""
    import json

    from usage_orchestration.alerts.model import Alert

    alert = Alert(
        kind=AlertKind.RECONCILIATION_BREAK,
        severity="error",
        subject="phala/" + "x" * 600,
        period="2026-05-19",
        summary="ledger_under for Evil <!channel> " + "word " * 600,
        details={f"k{i}": "v" * 5000 for i in range(100)},
        links=[{"href": f"http://ui/{i}", "text": "t" * 900} for i in range(9)],
    )
    channel = PagerDutyChannel("http://pd.invalid/v2/enqueue", "rk", oncall=OnCall(owner="o"))
    event = channel.event(Notification.trigger_of(alert))
    payload = event["payload"]
    assert len(payload["summary"]) <= 1024 and payload["summary"].startswith("ledger_under")
    assert len(payload["group"]) <= 255 and len(payload["component"]) <= 255
    assert len(event["dedup_key"]) <= 255
    details = payload["custom_details"]
    assert len(json.dumps(details)) <= 16_000 and len(details) <= 41
    assert "_truncated" in details and details["owner"] == "o"
    assert len(event["links"]) <= 5 and all(len(link["text"]) <= 255 for link in event["links"])
    channel.close()
