"""Where a run's steps execute: in the run's process, one process per step, or on Celery workers
(``dagster-celery``) behind a Redis or RabbitMQ broker.

``engine: auto`` (the default) follows the profile (``settings/profiles.py``): ``in_process`` for
the demo (a process per step costs ~3 s on 2 cores), ``multiprocess`` for production, where the
provider steps of one range run overlap (Forge's slow request budget does not hold up Phala and
Neon) while each provider's pool still allows one step at a time across runs.

``defs/executor.py`` turns these settings into the Definitions' executor; the Celery workers
build their app from the same settings (``defs/celery_app.py``), so the run and the workers
agree on broker, result backend and queue. A broker password never belongs in the settings
file: put the whole URL in ``USAGE_EXECUTION__BROKER_URL`` (``..._BACKEND_URL``); it is masked
in every message (``masked_url``, ``settings/secrets.py``).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from usage_orchestration.settings.fields import Count
from usage_orchestration.settings.profiles import DEFAULT_ENGINE, Engine, Profile
from usage_orchestration.settings.urls import split_url

BROKER_URL_ENV = "USAGE_EXECUTION__BROKER_URL"
BACKEND_URL_ENV = "USAGE_EXECUTION__BACKEND_URL"
BROKER_URL_ENVS: tuple[str, ...] = (BROKER_URL_ENV, BACKEND_URL_ENV)

# Engine (in_process | multiprocess | celery) lives in profiles.py beside DEFAULT_ENGINE
EngineChoice = Literal["auto", "in_process", "multiprocess", "celery"]
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")
# rpc:// sends results back over the broker (RabbitMQ); redis(s):// stores them in Redis.
BACKEND_SCHEMES = ("redis", "rediss", "rpc")
# A queue or key prefix ends up in Redis keys and AMQP routing keys: keep it plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


def url_password(value: str) -> str | None:
    """The password a broker URL carries (``redis://:pw@host``, ``amqp://user:pw@host``)."""
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def masked_url(value: str) -> str:
    """``value`` with its password replaced by ``***`` (for logs, metadata and errors)."""
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return "<not a URL>"
    if not password:
        return value
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    parts = split_url(value)  # never repeats the value: it may hold a password
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in schemes)}")
    if parts.scheme != "rpc" and not parts.hostname:
        raise ValueError("has no host")
    return value


def check_broker_url(value: str) -> str:
    return _check_url(value, BROKER_SCHEMES)


def check_backend_url(value: str) -> str:
    return _check_url(value, BACKEND_SCHEMES)


def check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("must be 1-100 letters, digits, '_', '.', ':' or '-'")
    return value


BrokerUrl = Annotated[str, AfterValidator(check_broker_url)]
BackendUrl = Annotated[str, AfterValidator(check_backend_url)]
QueueName = Annotated[str, AfterValidator(check_name)]


class ExecutionSettings(BaseModel):
    """How the steps of a run execute (``execution:`` in the settings file)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    engine: EngineChoice = Field(
        "auto",
        description="auto: the profile's (demo: in_process, production: multiprocess); "
        "in_process: every step in the run's process, one after the other (a process per step "
        "costs ~3 s on 2 cores); multiprocess: a process per step, so the provider steps of a "
        "run overlap; celery: steps are Celery tasks on workers (docs/deployment.md)",
    )
    max_concurrent: Count | None = Field(
        None,
        le=64,
        description="multiprocess: step processes at once (default: one per enabled provider "
        "plus the ledger load, the steps a range run can start together)",
    )
    start_method: Literal["forkserver", "spawn"] = Field(
        "forkserver",
        description="multiprocess: forkserver imports the code location once per run and forks "
        "each step from it; spawn starts each step as a fresh interpreter (~3 s per step on 2 "
        "cores)",
    )
    broker_url: BrokerUrl = Field(
        "redis://127.0.0.1:6379/0",
        description="celery: the broker (redis://, rediss://, amqp://, pyamqp://). A password "
        f"belongs in {BROKER_URL_ENV}, not in the file.",
    )
    backend_url: BackendUrl = Field(
        "redis://127.0.0.1:6379/0",
        description="celery: where workers put step results (redis://, rediss://, or rpc:// "
        f"through a RabbitMQ broker). A password belongs in {BACKEND_URL_ENV}.",
    )
    queue: QueueName = Field(
        "usage_orchestration",
        description="celery: the queue the run submits steps to and the workers consume (-Q)",
    )
    key_prefix: QueueName | None = Field(
        None,
        description="celery on Redis: a prefix of every broker and result key, so several "
        "deployments (or test runs) share one Redis without meeting",
    )

    @model_validator(mode="after")
    def _prefix_needs_redis(self) -> ExecutionSettings:
        if self.key_prefix is not None:
            if urlsplit(self.broker_url).scheme not in ("redis", "rediss"):
                raise ValueError("key_prefix: needs a redis:// broker_url")
        return self

    def celery_config_source(self) -> dict[str, object]:
        """Celery settings (its lowercase names) beyond broker and backend, the same for the
        run that submits steps and for the workers that execute them."""
        # dagster-celery's defaults (connection retries), which a config_source replaces whole
        transport: dict[str, object] = {
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        }
        result_transport: dict[str, object] = {}
        if self.key_prefix is not None:
            transport["global_keyprefix"] = self.key_prefix
            result_transport["global_keyprefix"] = self.key_prefix
        config: dict[str, object] = {
            "task_default_queue": self.queue,
            "broker_transport_options": transport,
            # a worker takes one step at a time: a long step never holds a second one back
            "worker_prefetch_multiplier": 1,
        }
        if result_transport:
            config["result_backend_transport_options"] = result_transport
        return config

    def resolved_engine(self, profile: Profile) -> Engine:
        """The engine steps run on: ``engine``, or the profile's default when it is auto."""
        if self.engine == "auto":
            return DEFAULT_ENGINE[profile]
        return self.engine

    def describe(self, profile: Profile = "demo") -> str:
        """The engine in one line, passwords masked (run metadata, logs, the CLI)."""
        engine = self.resolved_engine(profile)
        if engine != "celery":
            return engine
        return (
            f"celery broker={masked_url(self.broker_url)} "
            f"backend={masked_url(self.backend_url)} queue={self.queue}"
        )
