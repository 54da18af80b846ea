"""Constrained numbers the settings models share, so that each kind of value is bounded once.

A field adds its default and description (and any tighter bound) with ``Field(...)``; pydantic
merges that with the bound here, and its message still names the setting's key.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# A duration that must pass: timeouts, retry delays, budget windows.
Seconds = Annotated[float, Field(gt=0)]
# A wait that may be nothing: Retry-After caps, backoff bases, margins.
SecondsOrZero = Annotated[float, Field(ge=0)]
# Pages, requests, days: at least one.
Count = Annotated[int, Field(ge=1)]
# Tries of one HTTP request, the first included.
Attempts = Annotated[int, Field(ge=1, le=20)]
