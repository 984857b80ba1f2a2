"""Shared token prefixes: how much of a prompt a slot, a saved state or a draft cache
already holds. Pure Python."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    # Compare in blocks first: prompts share long prefixes and differ near the end.
    step = 64
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def longest(entries: Iterable[Any], tokens: list[int]) -> tuple[Any | None, int]:
    """The first of ``entries`` (each with ``.tokens``) sharing the longest prefix with
    ``tokens``, and that length; ``(None, 0)`` when none shares any."""
    best, best_len = None, 0
    for entry in entries:
        n = common_prefix(entry.tokens, tokens)
        if n > best_len:
            best, best_len = entry, n
    return best, best_len
