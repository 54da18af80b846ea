"""Deterministic demo data: the same (seed, day, key) always gives the same numbers."""

from __future__ import annotations

import hashlib
import random
from datetime import date, timedelta


def rng(seed: int, *parts: object) -> random.Random:
    """A private RNG for (seed, parts): independent of call order and process."""
    digest = hashlib.sha256("|".join([str(seed), *map(str, parts)]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def days_between(start: date, end_exclusive: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end_exclusive - start).days)]


def stable_id(seed: int, *parts: object, length: int = 12) -> str:
    return hashlib.sha256("|".join([str(seed), *map(str, parts)]).encode()).hexdigest()[:length]
