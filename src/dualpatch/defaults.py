"""Settings every layer shares, kept free of heavy imports so the CLI and configs can read them."""

from __future__ import annotations

import os
from pathlib import Path

#: smallest input side: the backbones' deeper stage needs a 2x2 map at least
MIN_SIDE = 16
#: seeds are 0 .. 2**63 - 1: numpy's generators refuse negative seeds, torch's take 64 bits, and
#: output i of a generator uses seed + i
MAX_SEED = 2**63 - 1


def default_cache() -> Path | None:
    """Feature cache folder: ``$DUALPATCH_CACHE`` (set but empty: no cache), else
    ``~/.cache/dualpatch/features``."""
    env = os.environ.get("DUALPATCH_CACHE")
    if env is not None:
        return Path(env) if env.strip() else None
    return Path.home() / ".cache" / "dualpatch" / "features"
