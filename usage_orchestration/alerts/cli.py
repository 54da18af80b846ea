"""Operator commands: ``usage-orchestration silence add|list|remove`` and
``usage-orchestration alerts list|deliver|resend``."""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from usage_orchestration.alerts.outbox import Outbox
from usage_orchestration.settings.alerts import ALERT_KINDS

_DURATION = re.compile(r"^(\d+)([mhd])$")


def parse_duration(text: str) -> timedelta:
    """``90m``, ``4h``, ``2d``."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"duration {text!r}: use e.g. 90m, 4h or 2d")
    n, unit = int(m.group(1)), m.group(2)
    return {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]


def parse_when(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"time {text!r}: use ISO 8601, e.g. 2026-05-21T09:00Z"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def register(subparsers: Any) -> None:
    silence = subparsers.add_parser(
        "silence", help="time-bounded alert silences (recorded, not sent)"
    )
    ssub = silence.add_subparsers(dest="silence_command", required=True)
    add = ssub.add_parser(
        "add", help="silence a kind and/or a subject (a trailing * matches a prefix)"
    )
    add.add_argument("--kind", help=f"alert kind: {', '.join(ALERT_KINDS)}")
    add.add_argument("--subject", help="alert subject, e.g. entity/<id> or provider/neon*")
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="duration", type=parse_duration, help="duration: 90m, 4h, 2d")
    until.add_argument("--until", type=parse_when, help="end time (ISO 8601, UTC if no offset)")
    add.add_argument("--reason", required=True, help="why (shown in `silence list`)")
    add.set_defaults(func=silence_add)
    ls = ssub.add_parser("list", help="silences from the CLI and the settings")
    ls.set_defaults(func=silence_list)
    rm = ssub.add_parser("remove", help="end a CLI silence now")
    rm.add_argument("id", type=int)
    rm.set_defaults(func=silence_remove)

    alerts = subparsers.add_parser("alerts", help="the alert outbox")
    asub = alerts.add_subparsers(dest="alerts_command", required=True)
    al = asub.add_parser("list", help="alerts with their state and delivery status")
    al.add_argument("--state", choices=["open", "resolved", "silenced"])
    al.add_argument("--kind")
    al.set_defaults(func=alerts_list)
    ad = asub.add_parser(
        "deliver", help="one delivery pass now (what the alert_delivery sensor does)"
    )
    ad.set_defaults(func=alerts_deliver)
    ar = asub.add_parser(
        "resend",
        help="re-queue a rejected delivery (after fixing its cause); the next pass sends it",
    )
    ar.add_argument("key", help="the alert's dedup_key (from `alerts list`)")
    ar.set_defaults(func=alerts_resend)


class OperatorError(RuntimeError):
    """An operator command cannot do what was asked; the CLI prints it as one line."""


def require_warehouse(url: str) -> None:
    """Refuse a warehouse that does not exist or holds none of the pipeline's tables (a wrong
    settings file or working directory): a command must not answer "nothing" from an empty
    database it has just created."""
    from sqlalchemy import inspect, make_url

    from usage_orchestration.warehouse.schema import metadata
    from usage_orchestration.warehouse.store import make_engine, safe_url

    parsed = make_url(url)
    where = safe_url(url)
    hint = "check USAGE_SETTINGS_FILE / usage_orchestration.yaml and USAGE_WAREHOUSE_URL"
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(str(parsed.database)).is_file():
            raise OperatorError(f"the warehouse {where} does not exist ({hint})")
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if not tables & set(metadata.tables):
        raise OperatorError(f"the warehouse {where} holds none of the pipeline's tables ({hint})")


def _outbox() -> Outbox:
    from usage_orchestration.settings import load_settings
    from usage_orchestration.warehouse.store import Warehouse

    settings = load_settings()
    require_warehouse(settings.warehouse_url)
    wh = Warehouse(settings.warehouse_url)
    wh.ensure_schema()
    return Outbox(wh.engine, settings.alerts)


def silence_add(args: argparse.Namespace) -> int:
    if not args.kind and not args.subject:
        print("error: give --kind and/or --subject (silencing everything is not allowed)")
        return 2
    if args.kind and args.kind not in ALERT_KINDS:
        print(f"error: unknown alert kind {args.kind!r}; known kinds: {', '.join(ALERT_KINDS)}")
        return 2
    now = datetime.now(UTC)
    ends = args.until if args.until else now + args.duration
    if ends <= now:
        print(f"error: the silence would end in the past ({ends.isoformat()})")
        return 2
    sid = _outbox().add_silence(
        kind=args.kind, subject=args.subject, ends_at=ends, reason=args.reason, now=now
    )
    print(
        f"silence {sid}: kind={args.kind or '*'} subject={args.subject or '*'} until {ends.isoformat()}"
    )
    return 0


def silence_list(_args: argparse.Namespace) -> int:
    outbox = _outbox()
    now = datetime.now(UTC).replace(tzinfo=None)
    for s in outbox.list_silences():
        state = (
            "active"
            if s["starts_at"] <= now < s["ends_at"]
            else ("ended" if s["ends_at"] <= now else "future")
        )
        print(
            f"{s['id']:>4}  {state:<6}  kind={s['kind'] or '*'}  subject={s['subject'] or '*'}  "
            f"until {s['ends_at'].isoformat()}Z  {s['reason']}"
        )
    for s in outbox.settings.silences:
        print(
            f"   -  settings  kind={s.kind or '*'}  subject={s.subject or '*'}  until {s.ends_at.isoformat()}  {s.reason}"
        )
    return 0


def silence_remove(args: argparse.Namespace) -> int:
    if _outbox().remove_silence(args.id):
        print(f"silence {args.id} removed")
        return 0
    print(f"error: no silence {args.id}")
    return 1


def alerts_list(args: argparse.Namespace) -> int:
    for a in _outbox().alerts(state=args.state, kind=args.kind):
        status = (
            a["resolve_status"]
            and f"resolve {a['resolve_status']}"
            or f"trigger {a['trigger_status']}"
        )
        why = f" ({a['suppressed_reason']})" if a["suppressed_reason"] else ""
        print(
            f"{a['state']:<9} {a['severity']:<8} {a['channel']:<9} {status}{why}  {a['dedup_key']}\n"
            f"          {a['summary']}"
        )
    return 0


def alerts_resend(args: argparse.Namespace) -> int:
    outbox = _outbox()
    try:
        done = outbox.requeue(args.key, now=datetime.now(UTC))
    except KeyError:
        print(f"error: no alert {args.key!r} (see `usage-orchestration alerts list`)")
        return 1
    if not done:
        row = outbox.get(args.key) or {}
        print(
            f"nothing to re-send: {args.key} is {row.get('state')}, trigger "
            f"{row.get('trigger_status')}, resolve {row.get('resolve_status')} (only a rejected "
            "delivery is re-queued)"
        )
        return 1
    print(f"re-queued the {done[0]} of {args.key}; the next delivery pass sends it")
    return 0


def alerts_deliver(_args: argparse.Namespace) -> int:
    from usage_orchestration.alerts.service import build_channels

    outbox = _outbox()
    channels = build_channels(
        outbox.settings,
        pagerduty_routing_key=os.environ.get("PAGERDUTY_ROUTING_KEY", ""),
        slack_webhook_url=os.environ.get("SLACK_WEBHOOK_URL", ""),
    )
    report = outbox.deliver_pending(channels, now=datetime.now(UTC))
    print(
        f"delivered {len(report.delivered)}, rejected {len(report.rejected)}, retrying {len(report.retrying)}"
    )
    return 0
