"""Shared fixtures: a tiny synthetic dataset, small fitted models, the CLI, KolektorSDD's location.

Everything is kept tiny (64x32 inputs, a handful of images, banks of a few dozen patches) so that
the whole suite runs in well under two minutes on two shared CPU cores. Plain helpers (``TINY``,
``tiny_params``, ``requires_kolektor``...) live in ``tests/support/common.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.common import KOLEKTOR, TINY, tiny_params

# Two cores shared with other jobs: torch's default of one thread per core spins and slows a tiny
# forward pass down by two orders of magnitude. One thread is the fastest setting here.
torch.set_num_threads(1)
# No network on these machines: torchvision must never try to download weights.
os.environ.setdefault("DUALPATCH_OFFLINE", "1")


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

    # The timeout only guards against a hung CLI; it is generous because the suite often runs
    # beside other CPU-heavy jobs on 2 cores, where a 10 s command can take minutes.
    def run(*args, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "dualpatch.cli", *map(str, args)],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
