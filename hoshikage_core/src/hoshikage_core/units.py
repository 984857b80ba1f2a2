"""Parsing of durations ("90s", "5m") and sizes ("8GB") used by the config and the API."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_duration(value: object, *, allow_never: bool = False) -> float:
    """Seconds from a number or a string like "500ms", "90s", "5m", "1h".

    With ``allow_never``, -1 (or "-1", "never") means "never" and is returned as -1.0.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a duration like '90s' or '5m'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        if allow_never and value.strip().lower() == "never":
            return -1.0
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"'{value}' is not a duration: use seconds or e.g. '90s', '5m', '1h'")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("must be a number of seconds or a duration like '90s' or '5m'")
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    if seconds < 0:
        if allow_never and seconds == -1:
            return -1.0
        raise ValueError("must be >= 0" + (" (or -1 for never)" if allow_never else ""))
    return seconds


def parse_size(value: object) -> int:
    """Bytes from an integer or a string like "512MB", "8GiB", "1.5G"."""
    if isinstance(value, bool):
        raise ValueError("must be a number of bytes or a size like '8GB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be >= 0")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = (m.group(2) or "").lower()
            base = 1024 if "i" in unit else 1000
            letter = unit[:1] if unit not in ("b", "") else ""
            power = " kmgt".index(letter) if letter else 0
            return int(float(m.group(1)) * base**power)
        raise ValueError(f"'{value}' is not a size: use bytes or e.g. '512MB', '8GiB'")
    raise ValueError("must be a number of bytes or a size like '8GB'")


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "never"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
