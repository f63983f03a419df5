"""Helpers every test may import (``from tests.support.common import TINY, tiny_params``):
sizes of the fixture models, KolektorSDD's location, an extractor that counts, a kill switch.

The pytest fixtures that build on them stay in ``tests/conftest.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

#: The repository this test tree belongs to (configs/, benchmarks/, docs/, README.md).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Read-only data shipped beside the repository (``/work/shared/data``).
SHARED_DATA = REPO_ROOT.parent / "shared/data"

#: KolektorSDD v1 as shipped beside the repository (read-only); tests that need it skip without it.
KOLEKTOR = SHARED_DATA / "kolektorsdd"
requires_kolektor = pytest.mark.skipif(
    not KOLEKTOR.is_dir(), reason=f"KolektorSDD not available at {KOLEKTOR}"
)

#: (H, W) input size of the fixture models: tall and narrow like the real data, tiny for speed.
TINY = (64, 32)


def tiny_params(**extra) -> dict:
    return dict(image_size=TINY, coreset_min=40, coreset_ratio=0.01, progress=False, **extra)


class CountingExtractor:
    """Wraps a feature extractor and counts the images it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.images = inner, 0

    def __call__(self, images):
        self.images += images.shape[0]
        return self.inner(images)


def spill_batches_done(spill: Path) -> int:
    """Batches a spill store under ``spill`` (``<key>/meta.json``) reports done; 0 while none is
    readable (not yet written, or caught mid-replace)."""
    import json

    for meta in spill.glob("*/meta.json"):
        try:
            return json.loads(meta.read_text())["done"]
        except (OSError, ValueError):
            return 0
    return 0


def kill_when(command: list[str], env: dict, log_path: Path, ready, waiting_for: str) -> int:
    """Start ``command``, SIGKILL it (no clean-up code runs) as soon as ``ready()`` holds, and
    return its exit status; fails the test if it ends first or ``ready`` never holds."""
    import signal
    import time

    log = log_path.open("w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 240
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"fit ended (status {proc.returncode}) before it could be killed: "
                            + log_path.read_text())
            assert time.monotonic() < deadline, f"{waiting_for} never happened"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    return proc.returncode
