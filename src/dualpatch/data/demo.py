"""A deterministic synthetic set in KSDD2's layout: striped commutator-like surfaces, defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from dualpatch.errors import DataError
from dualpatch.fileio import atomic_dir

DEMO_SIZE = (320, 128)  # (H, W), KSDD2's tall and narrow aspect
DEMO_COUNTS = {"train": (60, 12), "test": (30, 15)}  # (good, defective)


def _surface(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Vertical copper bars separated by dark gaps, with brushed texture and uneven lighting."""
    period = rng.uniform(18, 26)
    phase = rng.uniform(0, period)
    x = np.arange(w)[None, :]
    bars = ((x + phase) % period) > rng.uniform(3, 5)
    base = np.where(bars, rng.uniform(0.55, 0.65), 0.15)
    brushed = ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), sigma=(6, 0.6)) * 0.25
    light = np.linspace(rng.uniform(-0.08, 0.0), rng.uniform(0.0, 0.08), h)[:, None]
    gray = base + brushed * bars + light + rng.normal(0, 0.02, (h, w))
    tint = np.array([1.0, 0.78, 0.6])  # copper
    return np.clip(gray[..., None] * tint, 0, 1)


def _defect(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """A scratch (thin bright line) or a spot (dark blob): returns its mask and intensity change."""
    mask = np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[:h, :w]
    if rng.random() < 0.5:
        y0, x0 = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w)
        angle, length = rng.uniform(0, np.pi), rng.uniform(30, 80)
        t = np.clip((yy - y0) * np.sin(angle) + (xx - x0) * np.cos(angle), -length / 2, length / 2)
        dist = np.hypot(yy - (y0 + t * np.sin(angle)), xx - (x0 + t * np.cos(angle)))
        mask |= dist < rng.uniform(1.0, 2.0)
        return mask, rng.uniform(0.08, 0.2)
    cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.2 * w, 0.8 * w)
    ry, rx = rng.uniform(3, 9), rng.uniform(3, 7)
    mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return mask, -rng.uniform(0.08, 0.2)


def make_demo_dataset(
    root: str | Path,
    seed: int = 0,
    counts: dict[str, tuple[int, int]] | None = None,
    size: tuple[int, int] = DEMO_SIZE,
) -> Path:
    """Write the demo set to ``root`` (train/ and test/, ``NNNNN.png`` + ``NNNNN_GT.png``).

    ``counts`` maps each split to (good, defective) images (default ``DEMO_COUNTS``); ``size`` is
    (H, W). Existing complete sets are left alone; the folder appears atomically.
    """
    root = Path(root)
    if (root / ".complete").exists():
        return root
    # The set replaces ``root`` whole: never an existing file or a folder holding anything else.
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: is a file; the demo set needs a new or empty folder")
    if root.is_dir() and any(p.name != ".complete" for p in root.iterdir()):
        raise DataError(
            f"{root}: not the demo set (no .complete marker) and not empty; "
            "the demo set needs a new or empty folder"
        )
    rng = np.random.default_rng(seed)
    h, w = size
    number = 10000
    with atomic_dir(root) as tmp:
        for split, (n_good, n_bad) in (counts or DEMO_COUNTS).items():
            (tmp / split).mkdir()
            for k in range(n_good + n_bad):
                img = _surface(rng, h, w)
                mask = np.zeros((h, w), dtype=bool)
                if k >= n_good:
                    for _ in range(int(rng.integers(1, 3))):
                        m, delta = _defect(rng, h, w)
                        soft = ndimage.gaussian_filter(m.astype(float), 0.8)
                        img = np.clip(img + delta * soft[..., None], 0, 1)
                        mask |= m
                Image.fromarray((img * 255).astype(np.uint8)).save(tmp / split / f"{number}.png")
                Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / split / f"{number}_GT.png")
                number += 1
        (tmp / ".complete").write_text(f"seed={seed}\n")
    return root
