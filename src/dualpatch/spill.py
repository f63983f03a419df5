"""Bounded-memory fit: patch features spill to an on-disk store; the coreset runs on their
in-memory random projection (or a pre-sample of it, past what the cap holds)."""

from __future__ import annotations

import re

from .errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "t": 1000**4,
    "tb": 1000**4,
}


def parse_size(value: str | int) -> int:
    """Bytes in ``value``: an int, or text like ``2GiB``, ``512MiB``, ``1.5GB``."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"max_memory {value!r} is not a size like 2GiB or 512MiB")
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise ConfigError(f"max_memory {value!r} must be more than zero")
    return size


def memory_size_ok(value: object) -> bool:
    try:
        parse_size(value)  # type: ignore[arg-type]
    except ConfigError:
        return False
    return True
