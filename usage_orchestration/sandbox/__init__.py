"""Loopback simulators of every external API, and the demo data set.

One ``Sandbox`` maps an ``httpx.Request`` to an ``httpx.Response``. Tests use it in-process as
an httpx transport (``sandbox.transport()``); ``usage-orchestration sandbox`` serves the very same
object on loopback (``sandbox/server.py``). Data is deterministic from (seed, day).
"""

from usage_orchestration.sandbox.core import Sandbox

__all__ = ["Sandbox"]
