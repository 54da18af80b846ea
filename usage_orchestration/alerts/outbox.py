"""The alert outbox: each alert's state and every delivery attempt, in the warehouse.

State machine of one alert (``alert_outbox``, keyed by its deterministic ``dedup_key``):

* a rule reports it → ``open`` (or ``silenced`` when a silence matches); its trigger is
  ``pending`` when it may be sent, else ``skipped`` with the reason (``history``: its period is
  older than ``page_recent_days``; ``silenced``; ``routing``: its severity routes nowhere);
* the rule reports it again → nothing new (the same tick evaluated twice sends once);
* the rule stops reporting it → ``resolved``; a resolve is ``pending`` when a trigger went out
  (or may have: an attempt was made), otherwise nothing is sent;
* reported again after a resolve → re-opened with a new pending trigger;
* reported at a higher severity → escalated: a new trigger to the new severity's channel. Its
  resolve goes to **every** channel a trigger of it went out to (read from ``alert_delivery``):
  the page is resolved on PagerDuty, and the Slack channel that saw the warning is told too.

A resolve that comes before its trigger was sent (a success right after a failure, within one
delivery interval) cancels the trigger: nothing is sent. If the trigger is being sent at that
moment (its lease is live), the resolve is queued and the same pass sends it right after.

Delivery (``deliver_pending``) claims a due row with a lease (so concurrent ticks do not send it
twice), makes one attempt, records it in ``alert_delivery``, and on 429/5xx/connection errors
schedules the next attempt with exponential backoff (or Retry-After); a 4xx is recorded as
``rejected`` with the reason and not retried. After the first retryable failure of a channel in a
tick, the tick stops using that channel. At-least-once: a crash between the send and the
bookkeeping re-sends on the next tick, and the receiver collapses it on ``dedup_key``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from usage_orchestration.alerts.channels import Channel, Notification
from usage_orchestration.alerts.model import MAX_DEDUP_KEY, SEVERITY_RANK, Alert, is_recent
from usage_orchestration.settings.alerts import AlertSettings, SilenceRule
from usage_orchestration.warehouse.schema import metadata

alert_outbox = Table(
    "alert_outbox",
    metadata,
    Column("dedup_key", String(MAX_DEDUP_KEY), nullable=False),  # as PagerDuty takes it
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("subject", String(512), nullable=False),
    Column("period", String(32), nullable=False),
    Column("threshold", String(64), nullable=False),
    Column("summary", Text, nullable=False),
    Column("details", Text, nullable=False),  # JSON
    Column("links", Text, nullable=False),  # JSON
    Column("channel", String(16), nullable=False),  # pagerduty | slack | none
    Column("state", String(16), nullable=False),  # open | resolved | silenced
    Column(
        "trigger_status", String(16), nullable=False
    ),  # pending|delivered|rejected|skipped|cancelled
    # null | pending | delivered | rejected | skipped | held (superseded: sent when the
    # higher alert that replaced it resolves)
    Column("resolve_status", String(16)),
    Column("suppressed_reason", String(32)),  # history | silenced | routing
    Column("attempts", Integer, nullable=False),  # attempts of the pending action
    Column("next_attempt_at", DateTime),
    Column("lease_until", DateTime),
    Column("last_error", Text),
    Column("first_seen_at", DateTime, nullable=False),
    Column("last_seen_at", DateTime, nullable=False),
    Column("resolved_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("dedup_key", name="pk_alert_outbox"),
)

alert_delivery = Table(
    "alert_delivery",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedup_key", String(255), nullable=False, index=True),
    Column("action", String(16), nullable=False),  # trigger | resolve
    Column("channel", String(16), nullable=False),
    Column("attempted_at", DateTime, nullable=False),
    Column("outcome", String(16), nullable=False),  # delivered | rejected | retry | requeued
    Column("http_status", Integer),
    Column("reason", Text),
)

alert_silence = Table(
    "alert_silence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(64)),
    Column("subject", String(512)),
    Column("starts_at", DateTime, nullable=False),
    Column("ends_at", DateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

OPEN_STATES = ("open", "silenced")


def _naive(dt: datetime) -> datetime:
    """Stored timestamps are naive UTC (the same on SQLite and PostgreSQL)."""
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def silence_matches(rule: SilenceRule, kind: str, subject: str, now: datetime) -> bool:
    if rule.starts_at is not None and now < rule.starts_at:
        return False
    if now >= rule.ends_at:
        return False
    if rule.kind and rule.kind != kind:
        return False
    if rule.subject:
        if rule.subject.endswith("*"):
            return subject.startswith(rule.subject[:-1])
        return subject == rule.subject
    return True


@dataclass
class SyncReport:
    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    unchanged: int = 0
    recorded_only: list[str] = field(default_factory=list)  # history / silenced / routing
    escalated: list[str] = field(default_factory=list)  # severity rose: sent again, new channel


@dataclass
class DeliveryReport:
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (dedup_key, action)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (key, action, reason)
    retrying: list[tuple[str, str, str]] = field(default_factory=list)
    blocked_channels: list[str] = field(default_factory=list)
    deferred: int = 0  # due but left for the next pass (the pass's time budget ran out)


class Outbox:
    """Alert state and delivery bookkeeping on an engine holding the outbox tables."""

    def __init__(self, engine: Engine, settings: AlertSettings) -> None:
        self.engine = engine
        self.settings = settings

    # -- silences -----------------------------------------------------------------------------
    def active_silences(self, now: datetime, conn: Connection | None = None) -> list[SilenceRule]:
        rules = [s for s in self.settings.silences if silence_matches_time(s, now)]
        q = select(alert_silence).where(
            and_(alert_silence.c.starts_at <= _naive(now), alert_silence.c.ends_at > _naive(now))
        )
        rows = [dict(r) for r in conn.execute(q).mappings()] if conn is not None else self._rows(q)
        for r in rows:
            rules.append(
                SilenceRule(
                    kind=r["kind"],
                    subject=r["subject"],
                    starts_at=_aware(r["starts_at"]),
                    ends_at=_aware(r["ends_at"]),  # type: ignore[arg-type]
                    reason=r["reason"],
                )
            )
        return rules

    def add_silence(
        self,
        *,
        kind: str | None,
        subject: str | None,
        ends_at: datetime,
        reason: str,
        now: datetime,
        starts_at: datetime | None = None,
    ) -> int:
        rule = SilenceRule(
            kind=kind, subject=subject, starts_at=starts_at or now, ends_at=ends_at, reason=reason
        )
        with self.engine.begin() as conn:
            res = conn.execute(
                insert(alert_silence).values(
                    kind=rule.kind,
                    subject=rule.subject,
                    starts_at=_naive(rule.starts_at or now),
                    ends_at=_naive(rule.ends_at),
                    reason=rule.reason,
                    created_at=_naive(now),
                )
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def list_silences(self) -> list[dict[str, Any]]:
        return self._rows(select(alert_silence).order_by(alert_silence.c.id))

    def remove_silence(self, silence_id: int) -> bool:
        with self.engine.begin() as conn:
            return (
                conn.execute(delete(alert_silence).where(alert_silence.c.id == silence_id)).rowcount
                > 0
            )

    # -- state --------------------------------------------------------------------------------
    def sync(
        self,
        alerts: Iterable[Alert],
        *,
        kinds: Sequence[str],
        now: datetime,
        scope: Mapping[str, str] | None = None,
    ) -> SyncReport:
        """Make the outbox match a full evaluation of the rules for ``kinds``: open what is
        reported, resolve open alerts of those kinds (and ``scope`` columns) that are not."""
        desired = {a.dedup_key: a for a in alerts}
        report = SyncReport()
        with self.engine.begin() as conn:
            silences = self.active_silences(now, conn)
            for alert in desired.values():
                self._upsert(conn, alert, now, silences, report)
            conds = [alert_outbox.c.kind.in_(list(kinds)), alert_outbox.c.state.in_(OPEN_STATES)]
            conds += [alert_outbox.c[k] == v for k, v in (scope or {}).items()]
            cols = [alert_outbox.c[c] for c in ("dedup_key", "kind", "subject", "period")]
            open_rows = conn.execute(
                select(*cols, alert_outbox.c.severity).where(and_(*conds))
            ).all()
            for row in open_rows:
                if row.dedup_key not in desired:
                    self._resolve(conn, row.dedup_key, now, _superseded(row, desired.values()))
                    report.resolved.append(row.dedup_key)
        return report

    def open(self, alerts: Iterable[Alert], *, now: datetime) -> SyncReport:
        """Record alerts reported by an event (a run failure) without resolving others."""
        report = SyncReport()
        with self.engine.begin() as conn:
            silences = self.active_silences(now, conn)
            for alert in alerts:
                self._upsert(conn, alert, now, silences, report)
        return report

    def resolve(self, keys: Iterable[str], *, now: datetime) -> list[str]:
        """Resolve the given alerts if open (an event cleared them)."""
        done: list[str] = []
        with self.engine.begin() as conn:
            for key in keys:
                row = conn.execute(
                    select(alert_outbox.c.state).where(alert_outbox.c.dedup_key == key)
                ).first()
                if row is not None and row.state in OPEN_STATES:
                    self._resolve(conn, key, now)
                    done.append(key)
        return done

    def _upsert(
        self,
        conn: Connection,
        alert: Alert,
        now: datetime,
        silences: list[SilenceRule],
        report: SyncReport,
    ) -> None:
        if not alert.active:
            self._record_closed(conn, alert, now, report)
            return
        silenced = any(silence_matches(s, alert.kind.value, alert.subject, now) for s in silences)
        content = self._content(alert, now)
        suppressed = self._suppressed_reason(alert, content["channel"], silenced, now)
        row = _outbox_row(conn, alert.dedup_key)
        if row is None or row["state"] == "resolved":
            self._open(conn, alert, row, content, silenced, suppressed, now)
            (report.recorded_only if suppressed else report.opened).append(alert.dedup_key)
            return
        change = self._refresh(conn, row, content, silenced, suppressed, now)
        if change == "escalated":
            report.escalated.append(alert.dedup_key)
        elif change == "reopened":
            report.opened.append(alert.dedup_key)
        report.unchanged += 1

    def _content(self, alert: Alert, now: datetime) -> dict[str, Any]:
        """What a report of the alert says now (refreshed on every report)."""
        return {
            "severity": alert.severity,
            "summary": alert.summary,
            "details": json.dumps(alert.details, default=str, sort_keys=True),
            "links": json.dumps(alert.links, sort_keys=True),
            "channel": self.settings.routing[alert.severity],
            "last_seen_at": _naive(now),
            "updated_at": _naive(now),
        }

    def _suppressed_reason(
        self, alert: Alert, channel: str, silenced: bool, now: datetime
    ) -> str | None:
        """Why the trigger is recorded but not sent, or None when it may be sent."""
        if channel == "none":
            return "routing"
        if not is_recent(alert.period, now, self.settings.page_recent_days):
            return "history"
        if silenced:
            return "silenced"
        return None

    @staticmethod
    def _open(
        conn: Connection,
        alert: Alert,
        row: Mapping[str, Any] | None,
        content: dict[str, Any],
        silenced: bool,
        suppressed: str | None,
        now: datetime,
    ) -> None:
        """A new alert, or one reported again after a resolve: a fresh trigger."""
        values = {
            **content,
            "state": "silenced" if silenced else "open",
            "trigger_status": "skipped" if suppressed else "pending",
            "resolve_status": None,
            "suppressed_reason": suppressed,
            "attempts": 0,
            "next_attempt_at": _naive(now),
            "lease_until": None,
            "last_error": None,
            "resolved_at": None,
        }
        if row is None:
            _insert_alert(conn, alert, now, values)
        else:
            _update_alert(conn, alert.dedup_key, values)

    @staticmethod
    def _refresh(
        conn: Connection,
        row: Mapping[str, Any],
        content: dict[str, Any],
        silenced: bool,
        suppressed: str | None,
        now: datetime,
    ) -> str | None:
        """Still reported while open or silenced: refresh the content, follow silences and
        escalations. ``"reopened"`` when a silence ended and the trigger is pending again,
        ``"escalated"`` when the severity rose and a new trigger goes to its channel."""
        values = dict(content)
        went_out = row["trigger_status"] not in ("pending", "skipped") or row["attempts"] > 0
        rose = SEVERITY_RANK[content["severity"]] > SEVERITY_RANK.get(row["severity"], 0)
        if rose and (went_out or row["trigger_status"] == "skipped"):
            # warning → error: the new severity's channel gets a trigger (and later the resolve).
            values.update(
                trigger_status="skipped" if suppressed else "pending",
                suppressed_reason=suppressed,
                attempts=0,
                next_attempt_at=_naive(now),
                lease_until=None,
                last_error=None,
            )
            _update_alert(conn, row["dedup_key"], values)
            return None if suppressed else "escalated"
        if went_out:
            # Once a trigger went out, its channel and severity stay (unless it escalates), so
            # the resolve reaches the same place.
            values.pop("channel")
            values.pop("severity")
        reopened: str | None = None
        if silenced and row["state"] == "open":
            values["state"] = "silenced"
            if row["trigger_status"] == "pending" and row["attempts"] == 0:
                values["trigger_status"] = "skipped"
                values["suppressed_reason"] = "silenced"
        elif not silenced and row["state"] == "silenced":
            values["state"] = "open"
            if (
                row["trigger_status"] == "skipped"
                and row["suppressed_reason"] == "silenced"
                and not suppressed
            ):
                # The silence ended and the condition persists: send it now.
                values["trigger_status"] = "pending"
                values["suppressed_reason"] = None
                values["next_attempt_at"] = _naive(now)
                reopened = "reopened"
        _update_alert(conn, row["dedup_key"], values)
        return reopened

    def _record_closed(
        self, conn: Connection, alert: Alert, now: datetime, report: SyncReport
    ) -> None:
        key = alert.dedup_key
        row = conn.execute(
            select(alert_outbox.c.state).where(alert_outbox.c.dedup_key == key)
        ).first()
        if row is None:
            # A condition already over when first seen: kept for the record, never sent.
            closed = {
                "state": "resolved",
                "trigger_status": "skipped",
                "resolve_status": "skipped",
                "suppressed_reason": "history",
                "attempts": 0,
                "resolved_at": _naive(now),
            }
            _insert_alert(conn, alert, now, {**self._content(alert, now), **closed})
            report.recorded_only.append(key)
        elif row.state in OPEN_STATES:
            self._resolve(conn, key, now)
            report.resolved.append(key)

    def _resolve(self, conn: Connection, key: str, now: datetime, superseded: bool = False) -> None:
        row = _outbox_row(conn, key)
        assert row is not None  # callers saw it open in this transaction
        values: dict[str, Any] = {
            "state": "resolved",
            "resolved_at": _naive(now),
            "updated_at": _naive(now),
        }
        in_flight = row["lease_until"] is not None and _naive(now) < row["lease_until"]
        sent_or_maybe = (
            _sent_or_maybe(row)
            # being sent right now (leased): it may land, so its resolve must follow it
            or (row["trigger_status"] == "pending" and in_flight)
            # an earlier trigger (before an escalation) went out on another channel
            or bool(_owed_channels(conn, row))
        )
        if row["trigger_status"] == "pending":
            values["trigger_status"] = "cancelled"
        if superseded and row["channel"] == "slack":
            # Replaced by a higher severity of the same condition (80 → 100 %): a "Resolved"
            # message in Slack now would read as good news while it got worse. Held, it is sent
            # when the higher alert resolves (the condition is over), if the warning went out.
            values.update(
                resolve_status="held" if sent_or_maybe else "skipped",
                suppressed_reason="superseded",
            )
        elif sent_or_maybe:
            values.update(
                resolve_status="pending", attempts=0, next_attempt_at=_naive(now), last_error=None
            )
        else:
            values["resolve_status"] = "skipped"
        _update_alert(conn, key, values)
        if not superseded:
            _release_held(conn, row, now)

    # -- delivery -----------------------------------------------------------------------------
    def deliver_pending(
        self,
        channels: Mapping[str, Channel],
        *,
        now: datetime,
        limit: int = 200,
        budget_s: float | None = None,
    ) -> DeliveryReport:
        """One delivery pass: due actions, oldest first, for at most ``budget_s`` seconds
        (``alerts.delivery_budget_s``); what is left stays due for the next pass."""
        report = DeliveryReport()
        due = _due(now)
        blocked: set[str] = set()
        budget = self.settings.delivery_budget_s if budget_s is None else budget_s
        # A send starts only while its whole read timeout still fits in the budget (the first
        # always does): one cut short times out after the receiver took it, and its retry sends
        # it twice. A budget shorter than the timeout can only cut: then any time left will do.
        timeout = self.settings.timeout_s
        needed = timeout if timeout <= budget else 0.0
        sent = 0
        started = time.monotonic()
        rows = self._due_rows(due, limit)
        for i, row in enumerate(rows):
            left = budget - (time.monotonic() - started)
            if left <= 0 or (sent and left < needed):
                report.deferred = len(rows) - i
                break
            # An alert's actions in order (a resolve on each channel it went out to; a resolve
            # queued while its trigger was being sent), each claimed and recorded on its own.
            key = row["dedup_key"]
            for _ in range(_MAX_ACTIONS_PER_ALERT):
                left = budget - (time.monotonic() - started)
                if left <= 0 or (sent and left < needed) or not self._claim(key, now, due):
                    break  # out of time, nothing due any more, or another pass has it
                fresh = self.get(key)  # read under the lease
                step = self._next_action(fresh) if fresh is not None else None
                if fresh is None or step is None or step[1] in blocked:
                    self._release(key)  # nothing (more) to send, or its channel backs off
                    break
                sent += 1
                if not self._deliver_one(fresh, *step, channels, now, left, report):
                    blocked.add(step[1])
                    break
        report.blocked_channels = sorted(blocked)
        return report

    def _next_action(self, row: Mapping[str, Any]) -> tuple[str, str, bool] | None:
        """(action, channel, last): what a claimed row sends next; a resolve with nowhere to
        go (its trigger never went out after all) is marked skipped."""
        if row["resolve_status"] == "pending":
            with self.engine.connect() as conn:
                owed = _owed_channels(conn, row)
            if not owed:
                with self.engine.begin() as conn:
                    _update_alert(conn, row["dedup_key"], {"resolve_status": "skipped"})
                return None
            return "resolve", owed[0], len(owed) == 1
        if row["trigger_status"] == "pending" and row["state"] in OPEN_STATES:
            return "trigger", row["channel"], True
        return None

    def _deliver_one(
        self,
        row: Mapping[str, Any],
        action: str,
        channel_name: str,
        last: bool,
        channels: Mapping[str, Channel],
        now: datetime,
        left: float,
        report: DeliveryReport,
    ) -> bool:
        """One attempt, recorded; False when the channel answered "retry later"."""
        key = row["dedup_key"]
        outcome, status, reason, after = _attempt(
            channels.get(channel_name), channel_name, _notification(row, action), left
        )
        self._record(
            key, action, channel_name, now, outcome, status, reason, after, row["attempts"],
            final=last,
        )  # fmt: skip
        if outcome == "delivered":
            report.delivered.append((key, action))
        elif outcome == "rejected":
            report.rejected.append((key, action, reason))
        else:
            report.retrying.append((key, action, reason))
            return False
        return True

    def _due_rows(self, due: Any, limit: int) -> list[dict[str, Any]]:
        return self._rows(
            select(alert_outbox)
            .where(due)
            .order_by(
                alert_outbox.c.next_attempt_at,
                alert_outbox.c.first_seen_at,
                alert_outbox.c.dedup_key,
            )
            .limit(limit)
        )

    def _release(self, key: str) -> None:
        with self.engine.begin() as conn:
            _update_alert(conn, key, {"lease_until": None})

    def _claim(self, key: str, now: datetime, due: Any) -> bool:
        lease = _naive(now + timedelta(seconds=self.settings.delivery_lease_s))
        with self.engine.begin() as conn:
            res = conn.execute(
                update(alert_outbox)
                .where(and_(alert_outbox.c.dedup_key == key, due))
                .values(lease_until=lease)
            )
            return res.rowcount == 1

    def backoff_s(self, attempts: int, retry_after_s: float | None) -> float:
        delay = min(
            self.settings.retry_base_s * (2 ** max(attempts - 1, 0)), self.settings.retry_max_s
        )
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.settings.retry_max_s))
        return delay

    def _record(
        self,
        key: str,
        action: str,
        channel: str,
        now: datetime,
        outcome: str,
        status: int | None,
        reason: str,
        retry_after_s: float | None,
        attempts_before: int,
        final: bool = True,
    ) -> None:
        """An attempt's outcome. ``final``: the alert's last channel for this action; a resolve
        owed to more channels stays pending (the delivery log says which got it)."""
        status_col = "resolve_status" if action == "resolve" else "trigger_status"
        values: dict[str, Any] = {"lease_until": None, "updated_at": _naive(now)}
        if not final and outcome != "retry":
            values.update(attempts=0, last_error=reason if outcome == "rejected" else None)
        elif outcome == "delivered":
            values.update({status_col: "delivered", "attempts": 0, "last_error": None})
        elif outcome == "rejected":
            values.update(
                {status_col: "rejected", "attempts": attempts_before + 1, "last_error": reason}
            )
        else:
            attempts = attempts_before + 1
            values.update(
                attempts=attempts,
                last_error=reason,
                next_attempt_at=_naive(
                    now + timedelta(seconds=self.backoff_s(attempts, retry_after_s))
                ),
            )
        with self.engine.begin() as conn:
            _update_alert(conn, key, values)
            _log_delivery(conn, key, action, channel, now, outcome, reason, http_status=status)

    # -- operator -----------------------------------------------------------------------------
    def requeue(self, key: str, *, now: datetime) -> list[str]:
        """Make a rejected delivery of ``key`` pending again (after its cause was fixed): the
        trigger of an open alert, the resolve of a resolved one; the next delivery pass sends
        it. Returns the actions re-queued (none when nothing of it was rejected); KeyError for
        an unknown key."""
        with self.engine.begin() as conn:
            row = _outbox_row(conn, key)
            if row is None:
                raise KeyError(key)
            values: dict[str, Any] = {
                "attempts": 0,
                "next_attempt_at": _naive(now),
                "lease_until": None,
                "last_error": None,
                "updated_at": _naive(now),
            }
            if row["state"] in OPEN_STATES and row["trigger_status"] == "rejected":
                action, channels = "trigger", [row["channel"]]
                values["trigger_status"] = "pending"
            elif row["state"] == "resolved" and row["resolve_status"] == "rejected":
                action, channels = "resolve", _rejected_resolves(conn, key)
                values["resolve_status"] = "pending"
            else:
                return []
            _update_alert(conn, key, values)
            for channel in channels:  # the log says who re-queued what (and owes the resolve)
                _log_delivery(
                    conn, key, action, channel, now, "requeued",
                    "re-queued by an operator (alerts resend)",
                )  # fmt: skip
            return [action]

    # -- reading ------------------------------------------------------------------------------
    def alerts(self, *, state: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        q = select(alert_outbox).order_by(alert_outbox.c.first_seen_at, alert_outbox.c.dedup_key)
        if state:
            q = q.where(alert_outbox.c.state == state)
        if kind:
            q = q.where(alert_outbox.c.kind == kind)
        return self._rows(q)

    def get(self, key: str) -> dict[str, Any] | None:
        rows = self._rows(select(alert_outbox).where(alert_outbox.c.dedup_key == key))
        return rows[0] if rows else None

    def deliveries(self, key: str | None = None) -> list[dict[str, Any]]:
        q = select(alert_delivery).order_by(alert_delivery.c.id)
        if key:
            q = q.where(alert_delivery.c.dedup_key == key)
        return self._rows(q)

    def open_alerts(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Open (or silenced) alerts of ``kinds``, their details parsed."""
        q = select(alert_outbox).where(
            and_(alert_outbox.c.kind.in_(list(kinds)), alert_outbox.c.state.in_(OPEN_STATES))
        )
        return [{**r, "details": json.loads(r["details"] or "{}")} for r in self._rows(q)]

    def due_count(self, now: datetime) -> int:
        """Actions a delivery pass would attempt now."""
        return len(self._scalars(select(alert_outbox.c.dedup_key).where(_due(now))))

    def _rows(self, q: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]

    def _scalars(self, q: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars().all())


def _outbox_row(conn: Connection, key: str) -> Mapping[str, Any] | None:
    return (
        conn.execute(select(alert_outbox).where(alert_outbox.c.dedup_key == key)).mappings().first()
    )


def _insert_alert(conn: Connection, alert: Alert, now: datetime, values: Mapping[str, Any]) -> None:
    """A new outbox row: the alert's identity (fixed for its life) and ``values``."""
    conn.execute(
        insert(alert_outbox).values(
            dedup_key=alert.dedup_key,
            kind=alert.kind.value,
            subject=alert.subject,
            period=alert.period,
            threshold=alert.threshold,
            first_seen_at=_naive(now),
            **values,
        )
    )


def _update_alert(conn: Connection, key: str, values: Mapping[str, Any]) -> None:
    conn.execute(update(alert_outbox).where(alert_outbox.c.dedup_key == key).values(**values))


def _log_delivery(
    conn: Connection,
    key: str,
    action: str,
    channel: str,
    now: datetime,
    outcome: str,
    reason: str | None,
    *,
    http_status: int | None = None,
) -> None:
    """One line of the delivery log (``alert_delivery``): what was done to which channel."""
    conn.execute(
        insert(alert_delivery).values(
            dedup_key=key,
            action=action,
            channel=channel,
            attempted_at=_naive(now),
            outcome=outcome,
            http_status=http_status,
            reason=reason,
        )
    )


_MAX_ACTIONS_PER_ALERT = 4  # a trigger and resolves on its channels, in one pass


def _sent_or_maybe(row: Mapping[str, Any]) -> bool:
    """The trigger went out, or may have (an attempt was made and is being retried)."""
    return row["trigger_status"] == "delivered" or (
        row["trigger_status"] == "pending" and row["attempts"] > 0
    )


def _release_held(conn: Connection, row: Mapping[str, Any], now: datetime) -> None:
    """The condition (kind, subject, period) is over: the lower alerts it superseded (80 %
    under 100 %) get their held resolve sent now."""
    t = alert_outbox.c
    conn.execute(
        update(alert_outbox)
        .where(
            and_(
                t.kind == row["kind"],
                t.subject == row["subject"],
                t.period == row["period"],
                t.dedup_key != row["dedup_key"],
                t.resolve_status == "held",
            )
        )
        .values(
            resolve_status="pending",
            suppressed_reason=None,
            attempts=0,
            next_attempt_at=_naive(now),
            updated_at=_naive(now),
        )
    )


def _rejected_resolves(conn: Connection, key: str) -> list[str]:
    """The channels whose latest resolve of ``key`` was rejected."""
    d = alert_delivery
    q = (
        select(d.c.channel, d.c.outcome)
        .where(and_(d.c.dedup_key == key, d.c.action == "resolve"))
        .order_by(d.c.id)
    )
    last = {channel: outcome for channel, outcome in conn.execute(q)}
    return sorted(c for c, outcome in last.items() if outcome == "rejected")


_OWES_A_RESOLVE = {("trigger", "delivered"), ("trigger", "retry"), ("resolve", "requeued")}


def _owed_channels(conn: Connection, row: Mapping[str, Any]) -> list[str]:
    """The channels still owed a resolve: each whose latest trigger that went out (or may
    have) is later than its latest resolve that ended (delivered or rejected); the alert's own
    channel first (the page closes first), then where it was posted before an escalation. An
    operator's re-queue of a rejected resolve (``alerts resend``) owes it again."""
    d = alert_delivery
    latest = (
        select(d.c.channel, d.c.action, d.c.outcome, func.max(d.c.id))
        .where(d.c.dedup_key == row["dedup_key"])
        .group_by(d.c.channel, d.c.action, d.c.outcome)
    )
    owes: dict[str, int] = {}
    ended: dict[str, int] = {}
    for channel, action, outcome, last in conn.execute(latest):
        if (action, outcome) in _OWES_A_RESOLVE:
            owes[channel] = max(owes.get(channel, 0), last)
        elif action == "resolve" and outcome in ("delivered", "rejected"):
            ended[channel] = max(ended.get(channel, 0), last)
    owed = {c for c, t in owes.items() if t > ended.get(c, 0)}
    if row["trigger_status"] == "delivered" and row["channel"] not in ended:
        owed.add(row["channel"])  # delivered before the log existed
    return sorted(owed, key=lambda c: (c != row["channel"], c))


def _due(now: datetime) -> Any:
    """An action is due: pending, its next attempt has come, and no live lease holds it."""
    return and_(
        or_(
            alert_outbox.c.trigger_status == "pending",
            alert_outbox.c.resolve_status == "pending",
        ),
        or_(
            alert_outbox.c.next_attempt_at.is_(None),
            alert_outbox.c.next_attempt_at <= _naive(now),
        ),
        or_(alert_outbox.c.lease_until.is_(None), alert_outbox.c.lease_until <= _naive(now)),
    )


def _notification(row: Mapping[str, Any], action: str) -> Notification:
    return Notification(
        action=action,  # type: ignore[arg-type]
        dedup_key=row["dedup_key"],
        kind=row["kind"],
        severity=row["severity"],
        subject=row["subject"],
        period=row["period"],
        summary=row["summary"],
        details=json.loads(row["details"]),
        links=json.loads(row["links"]),
    )


def _attempt(
    channel: Channel | None, channel_name: str, notification: Notification, left_s: float
) -> tuple[str, int | None, str, float | None]:
    """One send: (outcome, HTTP status, reason, Retry-After seconds); its timeout is cut to
    what is left of the pass's budget."""
    if channel is None:
        return "rejected", None, f"channel {channel_name!r} is not configured", None
    result = channel.send(notification, timeout_s=left_s)
    return result.outcome, result.status, result.reason, result.retry_after_s


def silence_matches_time(rule: SilenceRule, now: datetime) -> bool:
    return (rule.starts_at is None or rule.starts_at <= now) and now < rule.ends_at


def _superseded(row: Any, desired: Iterable[Alert]) -> bool:
    """An open alert no longer reported because the same condition (kind, subject, period) is
    now reported at a higher severity (another threshold)."""
    rank = SEVERITY_RANK.get(row.severity, 0)
    return any(
        a.kind.value == row.kind
        and a.subject == row.subject
        and a.period == row.period
        and SEVERITY_RANK[a.severity] > rank
        for a in desired
    )
