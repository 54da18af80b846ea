"""The outbox state machine and delivery against the PagerDuty and Slack sandboxes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from usage_orchestration.alerts.channels import Channel
from usage_orchestration.alerts.model import Alert, AlertKind, dedup_key
from usage_orchestration.alerts.outbox import Outbox
from usage_orchestration.alerts.service import build_channels
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.core import Fault
from usage_orchestration.settings import load_settings
from usage_orchestration.settings.alerts import AlertSettings, SilenceRule
from usage_orchestration.warehouse.store import Warehouse

NOW = datetime(2026, 5, 20, 10, 0, tzinfo=UTC)
ROUTING_KEY = "sandbox-routing-key-000000000000"
WEBHOOK = "http://sandbox/slack/services/T000/B000/secret-webhook-token"


def alert(
    subject: str = "entity/support-bot",
    *,
    kind: AlertKind = AlertKind.BUDGET_THRESHOLD,
    severity: str = "critical",
    period: str = "2026-05",
    threshold: str = "100pct",
    active: bool = True,
) -> Alert:
    return Alert(
        kind=kind,
        severity=severity,  # type: ignore[arg-type]
        subject=subject,
        period=period,
        threshold=threshold,
        summary=f"{subject} is over budget for {period}",
        details={"credits_used": "120"},
        active=active,
    )


def make(
    db_url: str, sandbox: Sandbox, **alert_overrides: object
) -> tuple[Outbox, dict[str, Channel]]:
    wh = Warehouse(db_url)
    wh.ensure_schema()
    cfg = AlertSettings(
        pagerduty_events_url="http://sandbox/pagerduty/v2/enqueue", **alert_overrides
    )  # type: ignore[arg-type]
    channels = build_channels(
        cfg,
        pagerduty_routing_key=ROUTING_KEY,
        slack_webhook_url=WEBHOOK,
        transport=sandbox.transport(),
    )
    return Outbox(wh.engine, cfg), channels


def triggers(sb: Sandbox, key: str | None = None) -> list[dict]:
    return [
        e
        for e in sb.received("pagerduty")
        if e["event_action"] == "trigger" and key in (None, e["dedup_key"])
    ]


def resolves(sb: Sandbox, key: str | None = None) -> list[dict]:
    return [
        e
        for e in sb.received("pagerduty")
        if e["event_action"] == "resolve" and key in (None, e["dedup_key"])
    ]


def test_dedup_key_is_deterministic_and_bounded() -> None:
    a = alert()
    assert a.dedup_key == "usage-orchestration/budget_threshold/entity/support-bot/2026-05/100pct"
    assert alert().dedup_key == a.dedup_key
    assert alert(threshold="80pct").dedup_key != a.dedup_key
    assert alert(period="2026-06").dedup_key != a.dedup_key
    long_a = dedup_key("anomaly", "x" * 400, "2026-05-01")
    long_b = dedup_key("anomaly", "x" * 399 + "y", "2026-05-01")
    assert len(long_a) <= 255 and len(long_b) <= 255 and long_a != long_b


def test_same_evaluation_twice_pages_once_and_clearing_resolves_once(
    db_url: str, sandbox: Sandbox
) -> None:
    outbox, channels = make(db_url, sandbox)
    a = alert()
    kinds = [AlertKind.BUDGET_THRESHOLD.value]
    for _ in range(2):  # the same tick evaluated twice
        outbox.sync([a], kinds=kinds, now=NOW)
        outbox.deliver_pending(channels, now=NOW)
    assert len(triggers(sandbox, a.dedup_key)) == 1
    assert outbox.get(a.dedup_key)["trigger_status"] == "delivered"  # type: ignore[index]

    for _ in range(2):  # the condition cleared; evaluated twice
        report = outbox.sync([], kinds=kinds, now=NOW + timedelta(minutes=5))
        outbox.deliver_pending(channels, now=NOW + timedelta(minutes=5))
    assert report.resolved == []  # already resolved on the first pass
    assert len(resolves(sandbox, a.dedup_key)) == 1
    row = outbox.get(a.dedup_key)
    assert row is not None and row["state"] == "resolved" and row["resolve_status"] == "delivered"
    actions = [(d["action"], d["outcome"]) for d in outbox.deliveries(a.dedup_key)]
    assert actions == [("trigger", "delivered"), ("resolve", "delivered")]


def test_sync_only_resolves_its_own_kinds(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox)
    brk = alert(
        "phala/e1/compute",
        kind=AlertKind.RECONCILIATION_BREAK,
        severity="error",
        period="2026-05-19",
        threshold="",
    )
    outbox.sync([brk], kinds=[AlertKind.RECONCILIATION_BREAK.value], now=NOW)
    outbox.sync([], kinds=[AlertKind.BUDGET_THRESHOLD.value], now=NOW)
    assert outbox.get(brk.dedup_key)["state"] == "open"  # type: ignore[index]


def test_history_is_recorded_not_paged(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox, page_recent_days=3)
    old = alert(
        kind=AlertKind.RECONCILIATION_BREAK, severity="error", period="2026-03-02", threshold=""
    )
    recent = alert(
        kind=AlertKind.RECONCILIATION_BREAK, severity="error", period="2026-05-17", threshold=""
    )
    report = outbox.sync([old, recent], kinds=[AlertKind.RECONCILIATION_BREAK.value], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    assert report.recorded_only == [old.dedup_key]
    assert [e["dedup_key"] for e in triggers(sandbox)] == [recent.dedup_key]
    row = outbox.get(old.dedup_key)
    assert row is not None and row["state"] == "open" and row["suppressed_reason"] == "history"
    # its condition clears: nothing was sent, so no resolve is sent either
    outbox.sync([recent], kinds=[AlertKind.RECONCILIATION_BREAK.value], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    assert resolves(sandbox) == []
    assert outbox.get(old.dedup_key)["resolve_status"] == "skipped"  # type: ignore[index]


def test_closed_period_resolves_open_alert_and_records_new_ones(
    db_url: str, sandbox: Sandbox
) -> None:
    outbox, channels = make(db_url, sandbox)
    may = alert(period="2026-05")
    outbox.sync([may], kinds=["budget_threshold"], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    # a new month: May's overrun is still in the data but its period closed
    june = NOW + timedelta(days=13)
    report = outbox.sync(
        [alert(period="2026-05", active=False), alert(period="2026-04", active=False)],
        kinds=["budget_threshold"],
        now=june,
    )
    outbox.deliver_pending(channels, now=june)
    assert report.resolved == [may.dedup_key]
    assert len(resolves(sandbox, may.dedup_key)) == 1
    april = outbox.get(alert(period="2026-04").dedup_key)
    assert (
        april is not None and april["state"] == "resolved" and april["trigger_status"] == "skipped"
    )
    assert len(triggers(sandbox)) == 1


def test_reopened_after_resolve_triggers_again(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox)
    a = alert()
    for step, desired in enumerate(([a], [], [a])):
        now = NOW + timedelta(minutes=step)
        outbox.sync(desired, kinds=["budget_threshold"], now=now)
        outbox.deliver_pending(channels, now=now)
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == [
        "trigger",
        "resolve",
        "trigger",
    ]


def test_pagerduty_down_for_three_ticks_then_every_alert_delivered_once(
    db_url: str, sandbox: Sandbox
) -> None:
    outbox, channels = make(db_url, sandbox, retry_base_s=30)
    alerts = [alert(f"entity/e{i}") for i in range(5)]
    outbox.sync(alerts, kinds=["budget_threshold"], now=NOW)
    sandbox.add_fault("pagerduty", Fault(status=503, count=2))
    sandbox.add_fault("pagerduty", Fault(status=429, count=1, headers={"Retry-After": "60"}))
    now = NOW
    for _tick in range(3):
        report = outbox.deliver_pending(channels, now=now)
        assert report.delivered == [] and len(report.retrying) == 1  # the channel backs off
        assert report.blocked_channels == ["pagerduty"]
        now += timedelta(minutes=5)
    assert triggers(sandbox) == []
    for _tick in range(2):  # recovered; a second tick has nothing left to send
        outbox.deliver_pending(channels, now=now)
        now += timedelta(minutes=5)
    got = [e["dedup_key"] for e in triggers(sandbox)]
    assert sorted(got) == sorted(a.dedup_key for a in alerts)  # each exactly once, none lost
    assert all(e["collapsed"] is False for e in triggers(sandbox))
    failed = [d for d in outbox.deliveries() if d["outcome"] == "retry"]
    assert [d["http_status"] for d in failed] == [503, 503, 429]


def test_retry_waits_for_backoff(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox, retry_base_s=30)
    a = alert()
    outbox.sync([a], kinds=["budget_threshold"], now=NOW)
    sandbox.add_fault("pagerduty", Fault(status=500, count=1))
    outbox.deliver_pending(channels, now=NOW)
    outbox.deliver_pending(channels, now=NOW + timedelta(seconds=10))  # too early
    assert sandbox.request_count("pagerduty") == 1
    row = outbox.get(a.dedup_key)
    assert row is not None and row["attempts"] == 1 and "HTTP 500" in row["last_error"]
    outbox.deliver_pending(channels, now=NOW + timedelta(seconds=31))
    assert len(triggers(sandbox, a.dedup_key)) == 1


def test_400_is_not_retried_and_records_reason(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox)
    a = alert()
    outbox.sync([a], kinds=["budget_threshold"], now=NOW)
    sandbox.add_fault(
        "pagerduty",
        Fault(
            status=400,
            count=1,
            body={"status": "invalid event", "errors": ["'payload.summary' is missing"]},
        ),
    )
    outbox.deliver_pending(channels, now=NOW)
    outbox.deliver_pending(channels, now=NOW + timedelta(hours=1))
    assert sandbox.request_count("pagerduty") == 1
    row = outbox.get(a.dedup_key)
    assert row is not None and row["trigger_status"] == "rejected"
    assert "payload.summary" in row["last_error"]
    d = outbox.deliveries(a.dedup_key)
    assert [(x["outcome"], x["http_status"]) for x in d] == [("rejected", 400)]


def test_crash_after_send_resends_and_receiver_collapses(db_url: str, sandbox: Sandbox) -> None:
    """At-least-once: the send happened but the bookkeeping did not (a crashed tick); the
    lease expires, the next tick sends again, PagerDuty collapses it on the dedup key."""
    outbox, channels = make(db_url, sandbox, delivery_lease_s=60)
    a = alert()
    outbox.sync([a], kinds=["budget_threshold"], now=NOW)

    class Crash(Exception):
        pass

    original = outbox._record

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash

    outbox._record = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        outbox.deliver_pending(channels, now=NOW)
    outbox._record = original  # type: ignore[method-assign]
    outbox.deliver_pending(channels, now=NOW + timedelta(seconds=30))  # leased: not yet
    assert len(triggers(sandbox)) == 1
    outbox.deliver_pending(channels, now=NOW + timedelta(seconds=61))
    events = triggers(sandbox, a.dedup_key)
    assert [e["collapsed"] for e in events] == [False, True]
    assert outbox.get(a.dedup_key)["trigger_status"] == "delivered"  # type: ignore[index]


def test_silence_records_but_does_not_send_and_expires(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox)
    a = alert()
    sid = outbox.add_silence(
        kind="budget_threshold",
        subject=None,
        ends_at=NOW + timedelta(hours=2),
        reason="known overrun",
        now=NOW,
    )
    outbox.sync([a], kinds=["budget_threshold"], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    row = outbox.get(a.dedup_key)
    assert row is not None and row["state"] == "silenced" and row["suppressed_reason"] == "silenced"
    assert triggers(sandbox) == []
    # the silence ends while the condition holds: it is sent then
    later = NOW + timedelta(hours=3)
    outbox.sync([a], kinds=["budget_threshold"], now=later)
    outbox.deliver_pending(channels, now=later)
    assert len(triggers(sandbox, a.dedup_key)) == 1
    assert outbox.remove_silence(sid) and outbox.list_silences() == []


def test_silence_from_settings_by_subject_prefix(db_url: str, sandbox: Sandbox) -> None:
    rule = SilenceRule(
        subject="entity/support-*", ends_at=NOW + timedelta(days=1), reason="migration"
    )
    outbox, channels = make(db_url, sandbox, silences=[rule])
    hit, miss = alert("entity/support-bot"), alert("entity/sales-dashboard")
    outbox.sync([hit, miss], kinds=["budget_threshold"], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    assert [e["dedup_key"] for e in triggers(sandbox)] == [miss.dedup_key]


def test_routing_by_severity_sends_warnings_to_slack(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox)
    warn = alert(kind=AlertKind.FORECAST_OVERRUN, severity="warning", threshold="")
    outbox.sync([warn], kinds=["forecast_overrun"], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    assert triggers(sandbox) == []
    msgs = sandbox.received("slack")
    assert len(msgs) == 1 and "over budget" in msgs[0]["message"]["text"]
    assert msgs[0]["webhook"] == "T000/B000/secret-webhook-token"


def test_slack_messages_are_cut_to_slack_limits(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox)
    huge = Alert(
        kind=AlertKind.ANOMALY,
        severity="warning",
        subject="entity/e1/compute",
        period="2026-05-19",
        summary="s" * 10_000,
        details={f"k{i}": "v" * 5_000 for i in range(20)},
    )
    outbox.sync([huge], kinds=["anomaly"], now=NOW)
    report = outbox.deliver_pending(channels, now=NOW)
    assert report.delivered == [(huge.dedup_key, "trigger")]  # the sandbox enforces the limits
    msg = sandbox.received("slack")[0]["message"]
    assert len(msg["text"]) <= 40_000
    assert all(len(b.get("text", {}).get("text", "")) <= 3_000 for b in msg["blocks"])


def test_secrets_never_recorded(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox)
    outbox.sync(
        [alert(kind=AlertKind.ANOMALY, severity="warning", threshold="")],
        kinds=["anomaly"],
        now=NOW,
    )
    sandbox.add_fault("slack", Fault(status=404, count=1, body={"echo": WEBHOOK}))
    outbox.deliver_pending(channels, now=NOW)
    text = repr(outbox.alerts()) + repr(outbox.deliveries()) + repr(channels)
    assert "secret-webhook-token" not in text and ROUTING_KEY not in text
    assert outbox.deliveries()[0]["outcome"] == "rejected"


def test_missing_routing_key_is_recorded(db_url: str, sandbox: Sandbox) -> None:
    wh = Warehouse(db_url)
    wh.ensure_schema()
    cfg = load_settings().alerts
    outbox = Outbox(wh.engine, cfg)
    channels = build_channels(
        cfg, pagerduty_routing_key="", slack_webhook_url="", transport=sandbox.transport()
    )
    a = alert()
    outbox.sync([a], kinds=["budget_threshold"], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    row = outbox.get(a.dedup_key)
    assert row is not None and row["trigger_status"] == "rejected"
    assert "PAGERDUTY_ROUTING_KEY" in row["last_error"]
    assert sandbox.request_count("pagerduty") == 0


def test_escalated_severity_pages_on_the_new_channel_and_resolves_there(
    db_url: str, sandbox: Sandbox
) -> None:
    outbox, channels = make(db_url, sandbox)
    warn = alert(
        "phala/e1/compute",
        kind=AlertKind.RECONCILIATION_BREAK,
        severity="warning",
        period="2026-05-19",
        threshold="",
    )
    outbox.sync([warn], kinds=["reconciliation_break"], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    worse = warn.model_copy(update={"severity": "error"})
    outbox.sync([worse], kinds=["reconciliation_break"], now=NOW)
    outbox.deliver_pending(channels, now=NOW)  # the warning grew into an error: it pages
    outbox.sync([], kinds=["reconciliation_break"], now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    # the page is resolved where it was raised, and the Slack channel that saw the warning
    # is told it is over (not left with a warning nobody closes)
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == ["trigger", "resolve"]
    slack = [m["message"]["text"] for m in sandbox.received("slack")]
    assert len(slack) == 2 and slack[0].startswith(":warning: [warning]")
    assert slack[1].startswith(":white_check_mark: Resolved [reconciliation_break]")
    row = outbox.get(warn.dedup_key)
    assert row is not None and row["resolve_status"] == "delivered"
    # the page closes first, then the notice; in one delivery pass
    actions = [(d["action"], d["channel"]) for d in outbox.deliveries(warn.dedup_key)]
    assert actions[-2:] == [("resolve", "pagerduty"), ("resolve", "slack")]
    outbox.deliver_pending(channels, now=NOW)
    assert len(sandbox.received("slack")) == 2 and sandbox.request_count("pagerduty") == 2


def test_escalation_resolve_retries_the_slack_notice_without_resending_the_page(
    db_url: str, sandbox: Sandbox
) -> None:
    outbox, channels = make(db_url, sandbox)
    warn = alert(
        "phala/e1/compute",
        kind=AlertKind.RECONCILIATION_BREAK,
        severity="warning",
        period="2026-05-19",
        threshold="",
    )
    kinds = ["reconciliation_break"]
    outbox.sync([warn], kinds=kinds, now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    outbox.sync([warn.model_copy(update={"severity": "error"})], kinds=kinds, now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    outbox.sync([], kinds=kinds, now=NOW)
    sandbox.add_fault("slack", Fault(status=503, count=1))
    outbox.deliver_pending(channels, now=NOW)
    row = outbox.get(warn.dedup_key)
    assert row is not None and row["resolve_status"] == "pending"  # Slack still owed
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == ["trigger", "resolve"]
    outbox.deliver_pending(channels, now=NOW + timedelta(hours=1))  # after the backoff
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == ["trigger", "resolve"]
    slack = [m["message"]["text"] for m in sandbox.received("slack")]
    assert len(slack) == 2 and slack[1].startswith(":white_check_mark: Resolved")
    assert outbox.get(warn.dedup_key)["resolve_status"] == "delivered"  # type: ignore[index]


def test_success_before_the_failure_was_sent_pages_nobody(db_url: str, sandbox: Sandbox) -> None:
    outbox, channels = make(db_url, sandbox)
    failure = alert(
        "job/daily_usage_job/phala_usage",
        kind=AlertKind.RUN_FAILURE,
        severity="error",
        period="2026-05-19",
        threshold="",
    )
    outbox.open([failure], now=NOW)
    assert outbox.resolve([failure.dedup_key], now=NOW) == [failure.dedup_key]
    report = outbox.deliver_pending(channels, now=NOW)
    assert report.delivered == [] and sandbox.request_count("pagerduty") == 0
    row = outbox.get(failure.dedup_key)
    assert row is not None
    assert (row["trigger_status"], row["resolve_status"]) == ("cancelled", "skipped")
    assert outbox.due_count(NOW) == 0


def test_success_while_the_failure_is_being_sent_resolves_after_it(
    db_url: str, sandbox: Sandbox
) -> None:
    """The trigger is claimed (in flight) when the success resolves it: the trigger lands, and
    the resolve is queued behind it, so the page does not stay open."""
    outbox, channels = make(db_url, sandbox)
    failure = alert(
        "job/daily_usage_job/phala_usage",
        kind=AlertKind.RUN_FAILURE,
        severity="error",
        period="2026-05-19",
        threshold="",
    )
    outbox.open([failure], now=NOW)
    real_send = channels["pagerduty"].send

    def send_then_success_lands(n, timeout_s=None):  # type: ignore[no-untyped-def]
        result = real_send(n, timeout_s)
        if n.action == "trigger":  # the success sensor runs while this send is in flight
            assert outbox.resolve([failure.dedup_key], now=NOW) == [failure.dedup_key]
        return result

    channels["pagerduty"].send = send_then_success_lands  # type: ignore[method-assign]
    outbox.deliver_pending(channels, now=NOW)  # one pass: the trigger, then its resolve
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == ["trigger", "resolve"]
    row = outbox.get(failure.dedup_key)
    assert row is not None and row["state"] == "resolved"
    assert (row["trigger_status"], row["resolve_status"]) == ("delivered", "delivered")


def test_superseded_warning_is_resolved_in_slack_when_the_page_resolves(
    db_url: str, sandbox: Sandbox
) -> None:
    """80 % (Slack) → 100 % (page) → back under budget: no "Resolved" in Slack while it got
    worse, but once the page resolves, Slack's 80 % warning is closed too."""
    outbox, channels = make(db_url, sandbox)
    kinds = ["budget_threshold"]
    warn = alert(severity="warning", threshold="80pct")
    page = alert(severity="critical", threshold="100pct")
    outbox.sync([warn], kinds=kinds, now=NOW)
    outbox.deliver_pending(channels, now=NOW)
    outbox.sync([page], kinds=kinds, now=NOW)  # only the highest is reported
    outbox.deliver_pending(channels, now=NOW)
    assert len(sandbox.received("slack")) == 1  # the warning; nothing "resolved" yet
    assert outbox.get(warn.dedup_key)["resolve_status"] == "held"  # type: ignore[index]
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == ["trigger"]

    outbox.sync([], kinds=kinds, now=NOW + timedelta(hours=1))  # budget raised: all clear
    outbox.deliver_pending(channels, now=NOW + timedelta(hours=1))
    assert [e["event_action"] for e in sandbox.received("pagerduty")] == ["trigger", "resolve"]
    slack = [m["message"]["text"] for m in sandbox.received("slack")]
    assert len(slack) == 2 and slack[1].startswith(":white_check_mark: Resolved [budget_threshold]")
    assert outbox.get(warn.dedup_key)["resolve_status"] == "delivered"  # type: ignore[index]
