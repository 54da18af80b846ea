"""Deterministic demo data: the same (seed, day, key) always gives the same numbers."""

from __future__ import annotations

import hashlib
import random


def rng(seed: int, *parts: object) -> random.Random:
    """A private RNG for (seed, parts): independent of call order and process."""
    digest = hashlib.sha256("|".join([str(seed), *map(str, parts)]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def stable_id(seed: int, *parts: object, length: int = 12) -> str:
    return hashlib.sha256("|".join([str(seed), *map(str, parts)]).encode()).hexdigest()[:length]
