"""Tiny datasets with planted duplicates, for the leak-detection and protocol tests.

``make_kolektor_folder``: KolektorSDD layout (``kosNN/PartK.jpg`` + ``PartK_label.bmp``), one
defective part per item; chosen items are file-for-file copies of another item, as kos34 is of
kos27 in the public set. ``make_folder``: MVTec layout with a few planted copies.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def _image(rng: np.random.Generator, size=(80, 32)) -> np.ndarray:
    h, w = size
    base = rng.integers(60, 200, size=(h, w), dtype=np.uint8)
    return np.repeat(base[..., None], 3, axis=2)


def _mask(rng: np.random.Generator, size=(80, 32), defective=True) -> np.ndarray:
    m = np.zeros(size, dtype=np.uint8)
    if defective:
        y, x = int(rng.integers(10, size[0] - 20)), int(rng.integers(4, size[1] - 12))
        m[y : y + 12, x : x + 6] = 255
    return m


def make_kolektor_folder(
    root: Path, items: int = 9, parts: int = 3, copies: dict[int, int] | None = None, seed=0
) -> Path:
    """Items kos01..kosNN; ``copies`` maps an item to the item it copies file for file."""
    rng = np.random.default_rng(seed)
    copies = copies or {}
    for n in range(1, items + 1):
        item = root / f"kos{n:02d}"
        if n in copies:
            shutil.copytree(root / f"kos{copies[n]:02d}", item)
            continue
        item.mkdir(parents=True)
        for k in range(parts):
            Image.fromarray(_image(rng)).save(item / f"Part{k}.jpg", quality=95)
            Image.fromarray(_mask(rng, defective=k == 0)).save(item / f"Part{k}_label.bmp")
    return root


def make_folder(root: Path, n_good=8, n_bad_train=3, n_test_good=4, n_test_bad=3, seed=0):
    """An MVTec-style folder (``train/good``, ``train/crack``, ``test/...``, ``ground_truth``)."""
    rng = np.random.default_rng(seed)
    for split, n_ok, n_bad in (("train", n_good, n_bad_train), ("test", n_test_good, n_test_bad)):
        (root / split / "good").mkdir(parents=True, exist_ok=True)
        (root / split / "crack").mkdir(parents=True, exist_ok=True)
        for i in range(n_ok):
            Image.fromarray(_image(rng)).save(root / split / "good" / f"{split}{i:03d}.png")
        for i in range(n_bad):
            img = _image(rng)
            mask = _mask(rng)
            img[mask > 0] = 255
            name = f"{split}{100 + i:03d}"
            Image.fromarray(img).save(root / split / "crack" / f"{name}.png")
            gt = root / "ground_truth" / "crack"
            gt.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(gt / f"{name}_mask.png")
    return root
