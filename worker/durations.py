"""Durations as people write them (``30s``, ``5m``, ``1h``, ``2d`` or plain seconds)."""

from __future__ import annotations

import re

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration_s(value: object) -> float:
    """Return ``value`` in seconds; raise ValueError saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: use 30s, 5m, 1h, 2d or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return float(match.group(1)) * _UNITS_S[match.group(2) or "s"]
    raise ValueError(f"invalid duration {value!r}: use 30s, 5m, 1h, 2d or a number of seconds")


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` (``90`` -> ``90s``, ``3600`` -> ``1h``)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS_S[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
