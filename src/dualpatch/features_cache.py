"""Where the per-image feature cache lives, and how to turn it off."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache() -> str | None:
    """``DUALPATCH_CACHE`` if set (empty: no cache), else ``~/.cache/dualpatch/features``."""
    env = os.environ.get("DUALPATCH_CACHE")
    if env is not None:
        return env.strip() or None
    return str(Path.home() / ".cache" / "dualpatch" / "features")
