"""Settings every layer shares, kept free of heavy imports so the CLI and configs can read them."""

from __future__ import annotations

import os
from pathlib import Path

#: smallest input side: the backbones' deeper stage needs a 2x2 map at least
MIN_SIDE = 16


def default_cache() -> Path | None:
    """Feature cache folder: ``$DUALPATCH_CACHE`` (set but empty: no cache), else
    ``~/.cache/dualpatch/features``."""
    env = os.environ.get("DUALPATCH_CACHE")
    if env is not None:
        return Path(env) if env.strip() else None
    return Path.home() / ".cache" / "dualpatch" / "features"
