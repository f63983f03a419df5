"""Settings every layer shares, kept free of heavy imports so the CLI and configs can read them."""

from __future__ import annotations

import os
from pathlib import Path

#: smallest input side: the backbones' deeper stage needs a 2x2 map at least
MIN_SIDE = 16


def default_cache() -> Path:
    """Feature cache folder: ``$DUALPATCH_CACHE``, else ``~/.cache/dualpatch/features``."""
    return Path(
        os.environ.get("DUALPATCH_CACHE", Path.home() / ".cache" / "dualpatch" / "features")
    )
