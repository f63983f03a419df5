"""Synthetic defects for the defect bank: a small inpainting DDPM, SDXL inpainting, copy-paste.

All three write the same folder layout (``imgs/``, ``masks/``, ``manifest.csv``), which
``load_augmented`` turns into defect crops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from dualpatch.augment.manifest import (
    COLUMNS,
    ManifestRow,
    augmented_samples,
    load_augmented,
    read_manifest,
)
from dualpatch.data import Dataset
from dualpatch.errors import ConfigError

METHODS = ("ddpm", "paste", "sdxl")
#: each generator's recipe version: bump it when the same inputs and seed give other images (a fix
#: or a new default), so that saved pools keyed by it (an experiment's ``augment/`` folders) are
#: made anew instead of being reused silently with the old recipe's images
#: (ddpm 2: placed masks on the pixels' grid, and no flips by default, DDPMConfig.flip)
RECIPES = {"ddpm": 2, "paste": 2, "sdxl": 1}


def recipe(spec: dict | None) -> int | None:
    """The recipe version of the generator an ``augment`` spec names (None: no ``augment``): what
    every saved result made from its images (a pool, a finished run, a rule choice) is keyed by."""
    return RECIPES[spec["method"]] if spec else None


# The generators pull in torch and diffusers: load them on first use only.
_LAZY = {
    "DDPMConfig": "ddpm",
    "generate_ddpm": "ddpm",
    "train_ddpm": "ddpm",
    "sample_ddpm": "ddpm",
    "generate_sdxl": "sdxl",
    "generate_paste": "paste",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def generate(
    method: str,
    dataset: str,
    data: str | Path,
    out: str | Path,
    n: int = 40,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    weights: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    train: Dataset | None = None,
) -> list[ManifestRow]:
    """Make ``n`` synthetic defect images from the training split of ``dataset`` at ``data``.

    ``train``: the training samples to draw from (a custom split or a cross-validation fold);
    without it, the dataset's default training split. Nothing outside it is ever read, so a
    synthetic defect can never come from a test image.

    ``method`` is ddpm (``steps``/``minutes`` bound training; 15 minutes when neither is given),
    paste, or sdxl (needs ``weights``; ``n`` is split evenly over the two reference prompts and
    ``steps`` are denoising steps, default 30).
    """
    from dualpatch.data import load_dataset

    if method not in METHODS:
        raise ConfigError(
            f"unknown augmentation method {method!r} (choose from {', '.join(METHODS)})"
        )
    if train is None:
        train = load_dataset(dataset, data, "train")
    if method == "paste":
        return import_module(".paste", __name__).generate_paste(train, n, out, seed, progress, log)
    if method == "ddpm":
        if steps is None and minutes is None:
            minutes = 15.0
        ddpm = import_module(".ddpm", __name__)
        return ddpm.generate_ddpm(
            train, n, out, None, steps, minutes, seed, progress=progress, log=log
        )
    if weights is None:
        raise ConfigError("augment method sdxl needs weights (a local SDXL inpainting model)")
    sdxl = import_module(".sdxl", __name__)
    per_prompt = math.ceil(n / len(sdxl.PROMPTS))
    return sdxl.generate_sdxl(weights, train, per_prompt, out, steps=steps or 30, seed=seed,
                              progress=progress, log=log)  # fmt: skip


__all__ = [
    "COLUMNS",
    "METHODS",
    "RECIPES",
    "recipe",
    "ManifestRow",
    "generate",
    "augmented_samples",
    "load_augmented",
    "read_manifest",
    *_LAZY,
]
