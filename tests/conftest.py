"""Shared fixtures: a tiny synthetic dataset, small fitted models, the CLI, KolektorSDD's location.

Everything is kept tiny (64x32 inputs, a handful of images, banks of a few dozen patches) so that
the whole suite runs in well under two minutes on two shared CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Two cores shared with other jobs: torch's default of one thread per core spins and slows a tiny
# forward pass down by two orders of magnitude. One thread is the fastest setting here.
torch.set_num_threads(1)
# No network on these machines: torchvision must never try to download weights.
os.environ.setdefault("DUALPATCH_OFFLINE", "1")

#: KolektorSDD v1 as shipped beside the repository (read-only); tests that need it skip without it.
KOLEKTOR = Path(__file__).resolve().parents[2] / "shared/data/kolektorsdd"
requires_kolektor = pytest.mark.skipif(
    not KOLEKTOR.is_dir(), reason=f"KolektorSDD not available at {KOLEKTOR}"
)

#: (H, W) input size of the fixture models: tall and narrow like the real data, tiny for speed.
TINY = (64, 32)


@pytest.fixture(scope="session")
def kolektor_root() -> Path:
    if not KOLEKTOR.is_dir():
        pytest.skip(f"KolektorSDD not available at {KOLEKTOR}")
    return KOLEKTOR


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The built-in synthetic set (KSDD2 layout), generated once per session."""
    from dualpatch.data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo")


@pytest.fixture(scope="session")
def demo_train(demo_root):
    from dualpatch.data import load_dataset

    return load_dataset("demo", demo_root, "train")


@pytest.fixture(scope="session")
def demo_test(demo_root):
    from dualpatch.data import load_dataset

    return load_dataset("demo", demo_root, "test")


@pytest.fixture(scope="session")
def tiny_normal(demo_train):
    """A few defect-free training images."""
    return demo_train.normal()[:6]


@pytest.fixture(scope="session")
def tiny_test(demo_test):
    """Three good and three defective test images."""
    return demo_test.normal()[:3] + demo_test.defective()[:3]


@pytest.fixture(scope="session")
def tiny_crops(demo_train):
    return demo_train.defect_crops(TINY)[:6]


def tiny_params(**extra) -> dict:
    return dict(image_size=TINY, coreset_min=40, coreset_ratio=0.01, progress=False, **extra)


@pytest.fixture(scope="session")
def fitted_single(tiny_normal):
    from dualpatch import PatchCore

    return PatchCore(**tiny_params()).fit(tiny_normal)


@pytest.fixture(scope="session")
def fitted_dual(tiny_normal, tiny_crops):
    from dualpatch import DualPatchCore

    return DualPatchCore(**tiny_params()).fit(tiny_normal, tiny_crops)


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """Environment for CLI subprocesses: private feature cache, offline, one thread."""
    env = dict(os.environ)
    env.update(
        DUALPATCH_CACHE=str(tmp_path_factory.mktemp("feature-cache")),
        DUALPATCH_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        COLUMNS="200",
    )
    return env


@pytest.fixture(scope="session")
def run_cli(cli_env):
    """Run ``dualpatch ARGS...`` in a subprocess; returns the CompletedProcess."""

    def run(*args, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dualpatch.cli", *map(str, args)],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


class CountingExtractor:
    """Wraps a feature extractor and counts the images it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.images = inner, 0

    def __call__(self, images):
        self.images += images.shape[0]
        return self.inner(images)


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
