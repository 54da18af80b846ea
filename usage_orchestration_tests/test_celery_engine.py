"""The Celery engine end to end: two ``dagster-celery`` workers on loopback execute a 30-day
range run of every asset, and the warehouse they build equals a single-process run's.

The sandbox serves every provider on a loopback port; the run (``dagster job execute``, the
executor from ``execution: {engine: celery}`` in the settings file) and both workers
(``dagster-celery worker start -A usage_orchestration.defs.celery_app``) are subprocesses
sharing one settings file, the sandbox secrets and a temporary ``DAGSTER_HOME`` with the
project's ``dagster.yaml`` (pools of 1). Redis keys carry a prefix and the queue a name unique to
the test, so parallel runs never meet; both are deleted afterwards. Skips only when Redis is
unreachable (``USAGE_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from usage_orchestration_tests.chaos_support import (
    CHAOS_SECRETS,
    KILL_PROFILE,
    RANGE_END_TAG,
    RANGE_START_TAG,
    assert_equals_in_process_run,
    assert_pools_released,
    backfill_days,
    chaos_sandbox,
    chaos_settings,
    seed_ledger,
)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("USAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("USAGE_TEST_RABBITMQ_URL", "pyamqp://guest@127.0.0.1:5672//")
WORKERS = ("w1", "w2")
POOLS = ("phala", "neon", "forge", "ledger")  # dagster.yaml: default_limit 1 each

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@dataclass
class Broker:
    """One broker of the test: the ``execution:`` settings for it and how to remove what the
    test left there (keys under the prefix, the queue)."""

    name: str
    execution: dict[str, str]
    cleanup: Callable[[], None]


def _redis_broker(tag: str) -> Broker:
    redis = pytest.importorskip("redis", reason="dagster-celery's Redis client is not installed")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis is unreachable at {REDIS_URL} ({type(exc).__name__}): no broker")
    prefix = f"usage-test-{tag}:"

    def cleanup() -> None:
        leftovers = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if leftovers:
            client.delete(*leftovers)
        client.close()

    execution = {"broker_url": REDIS_URL, "backend_url": REDIS_URL, "key_prefix": prefix}
    return Broker("redis", execution, cleanup)


def _rabbitmq_broker(tag: str) -> Broker:
    from kombu import Connection

    conn = Connection(AMQP_URL, connect_timeout=2)
    try:
        conn.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises the transport's own errors
        pytest.skip(f"RabbitMQ is unreachable at {AMQP_URL} ({type(exc).__name__}): no broker")

    def cleanup() -> None:
        # the test's queue and its exchange (results went over rpc:// reply queues, auto-deleted)
        channel = conn.default_channel
        channel.queue_delete(f"usage-test-{tag}")
        channel.exchange_delete(f"usage-test-{tag}")
        conn.release()

    return Broker("rabbitmq", {"broker_url": AMQP_URL, "backend_url": "rpc://"}, cleanup)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    tag = uuid.uuid4().hex[:10]
    make = _redis_broker if request.param == "redis" else _rabbitmq_broker
    b = make(tag)
    b.execution = {"engine": "celery", "queue": f"usage-test-{tag}", **b.execution}
    try:
        yield b
    finally:
        b.cleanup()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group (a Celery warm shutdown), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


class Processes:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[str, Path] = {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        self.logs[name] = self.tmp / f"{name}.log"
        proc = subprocess.Popen(
            cmd,
            cwd=self.tmp,
            env=self.env,
            stdout=self.logs[name].open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the worker's pool children are stopped with it
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str, lines: int = 40) -> str:
        text = self.logs[name].read_text(errors="replace") if name in self.logs else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


def _await_ready(procs: Processes, name: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker {name} exited ({proc.returncode}):\n{procs.log(name)}")
        if " ready." in procs.log(name, 400):
            return
        time.sleep(0.5)
    raise AssertionError(f"worker {name} not ready after 120 s:\n{procs.log(name)}")


def test_two_celery_workers_build_the_single_process_warehouse(
    tmp_path: Path, broker: Broker
) -> None:
    from dagster import DagsterInstance, DagsterRunStatus

    from usage_orchestration.sandbox.server import SandboxServer

    days = backfill_days()
    queue = broker.execution["queue"]
    tag = queue.removeprefix("usage-test-")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # pools of 1, run queue of 4
    # the instance's storage is created (and its schema stamped) once, here: processes that
    # create it at the same moment stamp two Alembic heads
    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs()

    server = SandboxServer(chaos_sandbox(profile=KILL_PROFILE)).start()
    procs: Processes | None = None
    try:
        ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        settings = chaos_settings(
            server.url,
            f"sqlite:///{tmp_path / 'celery' / 'warehouse.sqlite'}",
            ledger_url,
            tmp_path / "celery" / "state",
            KILL_PROFILE,
        )
        seed_ledger(settings, days)
        # the settings the run and every worker read: the chaos client profile (no client-side
        # budget worth waiting for, no step retries: a step that needs one fails the test)
        data = settings.model_dump(mode="json", exclude_unset=True)
        data["execution"] = broker.execution
        settings_file = tmp_path / "usage_orchestration.yaml"
        settings_file.write_text(yaml.safe_dump(data))

        env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_", "DAGSTER_"))}
        env.update(CHAOS_SECRETS)
        env.update(
            PYTHONPATH=str(REPO),
            DAGSTER_HOME=str(home),
            USAGE_SETTINGS_FILE=str(settings_file),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        procs = Processes(tmp_path, env)
        workers = {
            name: procs.start(
                name,
                [
                    str(BIN / "dagster-celery"),
                    "worker",
                    "start",
                    "-A",
                    "usage_orchestration.defs.celery_app",
                    "-q",
                    queue,
                    "-n",
                    f"{name}-{tag}",
                    "--",
                    "--concurrency=1",  # one step at a time each: the run needs both workers
                ],
            )
            for name in WORKERS
        }
        for name, proc in workers.items():
            _await_ready(procs, name, proc)

        started = time.monotonic()
        tags = {RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()}
        run = subprocess.run(
            [str(BIN / "dagster"), "job", "execute", "-m", "usage_orchestration.definitions"]
            + ["-j", "daily_usage_job", "--tags", json.dumps(tags)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        celery_wall_s = time.monotonic() - started
        logs = "\n".join(f"--- {n}\n{procs.log(n)}" for n in WORKERS)
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-12000:]}\n{logs}"
    finally:
        if procs is not None:
            procs.stop()
        server.stop()

    with DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_runs()
        assert record.status == DagsterRunStatus.SUCCESS
        assert record.tags[RANGE_START_TAG] == days[0].isoformat()
        # the executor was configured in the loading process: no broker URL in the stored run
        stored = json.dumps([record.run_config, record.tags])
        assert broker.execution["broker_url"] not in stored
        events = instance.all_logs(record.run_id)
        executed_on: dict[str, str] = {}
        for e in events:
            # the worker's engine event (dagster_celery/tasks.py) names its Celery hostname
            if e.dagster_event is None or "in celery worker" not in e.dagster_event.message:
                continue
            metadata = e.dagster_event.engine_event_data.metadata
            executed_on[str(e.step_key)] = str(metadata["Celery worker"].value)
        materialized = {
            e.dagster_event.asset_key.to_user_string()
            for e in events
            if e.dagster_event is not None
            and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"
        }
        # the run claimed the pools' slots through the instance, as with the in-process executor
        # (a pool never claimed has no slot), and freed every one
        pools = {p: instance.event_log_storage.get_concurrency_info(p) for p in POOLS}

    steps = {e.step_key for e in events if e.step_key}
    assert executed_on and set(executed_on) == steps, (steps, executed_on)
    hosts = {h.split("@")[0] for h in executed_on.values()}
    assert hosts == {f"{n}-{tag}" for n in WORKERS}, executed_on
    assert {"phala_usage", "neon_usage", "forge_usage", "focus_costs"} <= materialized
    assert_pools_released(pools)

    # the same range in one process, from the same sandbox and ledger, into its own warehouse
    assert_equals_in_process_run(settings.warehouse_url, ledger_url, days, tmp_path / "single")
    print(
        f"{broker.name}: celery run of {len(days)} days on 2 workers: {celery_wall_s:.1f} s; steps {executed_on}"
    )
