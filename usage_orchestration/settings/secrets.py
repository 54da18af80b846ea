"""The secrets: which environment variables hold them, which the enabled features need, and
masking their values out of any text (errors, logs, alerts).

Secrets are only ever handled by NAME here, except in ``secret_values``/``redact``, which read
the values to mask them and never return them in a message.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, ConfigDict

from usage_orchestration.settings.execution import BROKER_URL_ENVS, url_password
from usage_orchestration.settings.urls import check_http_url, database_url, is_local_url

if TYPE_CHECKING:
    from usage_orchestration.settings import UsageSettings

PHALA_API_KEY = "PHALA_API_KEY"
NEON_API_KEY = "NEON_API_KEY"
FORGE_EMAIL = "FORGE_EMAIL"
FORGE_API_TOKEN = "FORGE_API_TOKEN"
LEDGER_API_TOKEN = "LEDGER_API_TOKEN"
PAGERDUTY_ROUTING_KEY = "PAGERDUTY_ROUTING_KEY"
SLACK_WEBHOOK_URL = "SLACK_WEBHOOK_URL"
# The settings that may carry a database password (whole URL in the environment).
WAREHOUSE_URL_ENV = "USAGE_WAREHOUSE_URL"
LEDGER_DATABASE_URL_ENV = "USAGE_LEDGER__DATABASE_URL"

# Every secret the README lists, in its order.
SECRET_ENV: tuple[str, ...] = (
    PHALA_API_KEY,
    NEON_API_KEY,
    FORGE_EMAIL,
    FORGE_API_TOKEN,
    LEDGER_API_TOKEN,
    PAGERDUTY_ROUTING_KEY,
    SLACK_WEBHOOK_URL,
)
DATABASE_URL_ENV: tuple[str, ...] = (WAREHOUSE_URL_ENV, LEDGER_DATABASE_URL_ENV)


class SecretRequirement(BaseModel):
    """An environment variable a feature needs, and the feature (for the error message)."""

    model_config = ConfigDict(frozen=True)

    name: str
    needed_for: str


def required_secrets(settings: UsageSettings) -> list[SecretRequirement]:
    """The secrets the enabled features of ``settings`` need, by name."""
    out: list[SecretRequirement] = []
    if settings.phala.enabled:
        out.append(SecretRequirement(name=PHALA_API_KEY, needed_for="phala.enabled"))
    if settings.neon.enabled:
        out.append(SecretRequirement(name=NEON_API_KEY, needed_for="neon.enabled"))
    if settings.forge.enabled:
        out += [
            SecretRequirement(name=FORGE_EMAIL, needed_for="forge.enabled"),
            SecretRequirement(name=FORGE_API_TOKEN, needed_for="forge.enabled"),
        ]
    if settings.ledger.backend == "http":
        out.append(SecretRequirement(name=LEDGER_API_TOKEN, needed_for="ledger.backend: http"))
    channels = set(settings.alerts.routing.values())
    if "pagerduty" in channels:
        out.append(SecretRequirement(name=PAGERDUTY_ROUTING_KEY, needed_for="alerts.routing"))
    if "slack" in channels:
        out.append(SecretRequirement(name=SLACK_WEBHOOK_URL, needed_for="alerts.routing"))
    return out


def secret_problems(settings: UsageSettings, environ: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with the secrets the settings need: missing (by name) or malformed (by
    name, never showing the value)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    missing = [r for r in required_secrets(settings) if not env.get(r.name, "").strip()]
    if missing:
        names = ", ".join(f"{r.name} ({r.needed_for})" for r in missing)
        problems.append(f"missing environment variable(s): {names}")
    hook = env.get(SLACK_WEBHOOK_URL, "").strip()
    if hook and any(r.name == SLACK_WEBHOOK_URL for r in required_secrets(settings)):
        try:
            check_http_url(hook)
        except ValueError as exc:
            problems.append(f"{SLACK_WEBHOOK_URL} {exc}")
        else:
            if settings.profile == "production" and is_local_url(hook):
                problems.append(f"{SLACK_WEBHOOK_URL} points at this machine (the sandbox)")
    return problems


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value in the environment, with the forms it travels in (URL-encoded, the
    Forge basic-auth header, database passwords), longest first so that masking is complete."""
    env = os.environ if environ is None else environ
    raw = [env.get(n, "") for n in SECRET_ENV]
    for name in DATABASE_URL_ENV:
        try:
            raw.append(database_url(env.get(name, "")).password or "")
        except Exception:  # not a URL: nothing to mask in it
            continue
    raw += [url_password(env.get(name, "")) or "" for name in BROKER_URL_ENVS]
    email, token = env.get(FORGE_EMAIL, ""), env.get(FORGE_API_TOKEN, "")
    if email and token:
        raw.append(base64.b64encode(f"{email}:{token}".encode()).decode())
    values = {v for s in raw if s for v in (s, quote(s, safe=""), quote_plus(s))}
    # tiny values would mask unrelated text; real secrets are never this short
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for s in secret_values() if secrets is None else secrets:
        if s:
            text = text.replace(s, "***")
    return text
