"""A Slack incoming webhook (``POST /slack/services/...``): answers ``ok`` or Slack's plain-text
errors and journals each accepted message."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from usage_orchestration.sandbox.core import Sandbox

TEXT_LIMIT = 40_000
BLOCKS_LIMIT = 50
SECTION_TEXT_LIMIT = 3_000


def _plain(status: int, text: str) -> httpx.Response:
    return httpx.Response(status, content=text.encode(), headers={"Content-Type": "text/plain"})


def register(sb: Sandbox) -> None:
    @sb.route("slack", "POST", "/slack/services/(?P<path>.+)")
    def webhook(req: httpx.Request, p: dict[str, str]) -> httpx.Response:
        try:
            message = json.loads(req.content)
        except ValueError:
            return _plain(400, "invalid_payload")
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return _plain(400, "no_text")
        if len(message.get("text") or "") > TEXT_LIMIT:
            return _plain(400, "msg_too_long")
        blocks = message.get("blocks") or []
        if len(blocks) > BLOCKS_LIMIT:
            return _plain(400, "invalid_blocks")
        for block in blocks:
            text = (block.get("text") or {}).get("text", "") if isinstance(block, dict) else ""
            if len(text) > SECTION_TEXT_LIMIT:
                return _plain(400, "invalid_blocks")
        sb.record("slack", {"webhook": p["path"], "message": message})
        return _plain(200, "ok")
