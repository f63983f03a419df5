"""Size limits, each stated in one line with its override, so that no input exhausts memory.

| limit | default | override |
| --- | --- | --- |
| input side (``--size``, ``image_size``) | 16 to 4096 pixels | ``DUALPATCH_MAX_SIDE`` |
| decoded pixels per image (from the header, before decoding) | 40 MP | ``DUALPATCH_MAX_PIXELS`` |
| KolektorSDD item numbers (``--train-items``) | 1 to 999 | none (folders are ``kosNN``) |

A worker decodes one image at a time, so a worker's pixel budget is the per-image limit.
"""

from __future__ import annotations

import os

from dualpatch.defaults import MIN_SIDE
from dualpatch.errors import ConfigError

__all__ = ["MIN_SIDE", "check_size", "max_pixels", "max_side", "parse_items"]
DEFAULT_MAX_SIDE = 4096
DEFAULT_MAX_PIXELS = 40_000_000
MAX_ITEM = 999


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name}={text!r}: expected a positive whole number")
    return value


def max_side() -> int:
    """Largest input side in pixels (``DUALPATCH_MAX_SIDE``)."""
    return _env_int("DUALPATCH_MAX_SIDE", DEFAULT_MAX_SIDE)


def max_pixels() -> int:
    """Largest image, in decoded pixels, that a loader will decode (``DUALPATCH_MAX_PIXELS``)."""
    return _env_int("DUALPATCH_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def check_size(height: int, width: int, option: str = "--size") -> tuple[int, int]:
    """(height, width) if each side is within ``MIN_SIDE`` .. ``max_side()``, else ConfigError.

    ``option`` names the setting as the user wrote it, e.g. ``--size 64 32``."""
    top = max_side()
    if min(height, width) < MIN_SIDE:
        raise ConfigError(f"{option}: each side needs at least {MIN_SIDE} pixels")
    if max(height, width) > top:
        raise ConfigError(
            f"{option}: each side may be at most {top} pixels "
            "(set DUALPATCH_MAX_SIDE to raise the limit)"
        )
    return height, width


def parse_items(spec: str, option: str = "--train-items") -> list[int]:
    """Item numbers from ``1-33`` or ``1,2,5-9``; each within 1 .. ``MAX_ITEM``."""
    out: set[int] = set()
    bad = ConfigError(f"{option}: {spec!r} is not a list of item numbers like 1-33 or 1,2,5-9")
    for part in str(spec).split(","):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise bad from None
        if not (1 <= first <= last <= MAX_ITEM):
            raise ConfigError(
                f"{option}: {part.strip()!r} is outside 1-{MAX_ITEM} or runs backwards"
            )
        out.update(range(first, last + 1))
    return sorted(out)
