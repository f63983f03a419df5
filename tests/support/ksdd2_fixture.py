"""Tiny KolektorSDD2 look-alikes in the official layout, for tests.

``train/`` and ``test/`` hold colour ``NNNNN.png`` images (about 230x630 WxH, a few pixels of
jitter like the real set) with grayscale 0/255 ``NNNNN_GT.png`` masks. Like the official archive,
``train/`` also holds the stray ``10301 (copy).png`` / ``10301_GT (copy).png`` pair.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

COPY_PAIR = ("10301 (copy).png", "10301_GT (copy).png")


@dataclass
class FixtureInfo:
    """What was generated: image stems per split and which of them are positive."""

    stems: dict[str, list[str]]
    positives: dict[str, set[str]]


def _stems(split: str, n: int, with_copy_pair: bool) -> list[str]:
    first = 10000 if split == "train" else 20000
    numbers = list(range(first, first + n))
    if split == "train" and with_copy_pair and 10301 not in numbers:
        numbers[-1] = 10301  # the copy pair duplicates 10301, so it must exist
    return [str(k) for k in sorted(numbers)]


def make_ksdd2_folder(
    root: str | Path,
    n_train: int = 16,
    n_test: int = 8,
    n_pos_train: int = 4,
    n_pos_test: int = 3,
    with_copy_pair: bool = True,
    size: tuple[int, int] = (230, 630),
    seed: int = 0,
) -> FixtureInfo:
    """Write a KSDD2-shaped set into ``root``; ``size`` = (W, H), each image jittered by <= 2 px."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    info = FixtureInfo({}, {})
    for split, n, n_pos in (("train", n_train, n_pos_train), ("test", n_test, n_pos_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        stems = _stems(split, n, with_copy_pair)
        positives = {stems[i] for i in rng.choice(len(stems), size=min(n_pos, n), replace=False)}
        info.stems[split], info.positives[split] = stems, positives
        for stem in stems:
            w, h = size[0] + int(rng.integers(-2, 3)), size[1] + int(rng.integers(-2, 3))
            # Copper-like vertical bars under a vertical gradient: no pixel noise, so the PNGs
            # compress well and the fixtures stay small and fast to write.
            x = np.arange(w)[None, :]
            bars = np.where((x // 12) % 2 == 0, 0.6, 0.2) * np.linspace(0.8, 1.0, h)[:, None]
            gray = bars * rng.uniform(0.9, 1.1)
            image = np.clip(gray[..., None] * [1.0, 0.78, 0.6] * 255, 0, 255).astype(np.uint8)
            mask = np.zeros((h, w), dtype=np.uint8)
            if stem in positives:
                y0, x0 = int(rng.integers(50, h - 120)), int(rng.integers(20, w - 80))
                mask[y0 : y0 + int(rng.integers(20, 80)), x0 : x0 + int(rng.integers(10, 50))] = 255
                image[mask > 0] = (image[mask > 0] * 0.4).astype(np.uint8)
            Image.fromarray(image).save(root / split / f"{stem}.png")
            Image.fromarray(mask).save(root / split / f"{stem}_GT.png")
    if with_copy_pair:
        shutil.copyfile(root / "train" / "10301.png", root / "train" / COPY_PAIR[0])
        shutil.copyfile(root / "train" / "10301_GT.png", root / "train" / COPY_PAIR[1])
    return info


def make_ksdd2_zip(
    path: str | Path,
    n_train: int = 16,
    n_test: int = 8,
    with_copy_pair: bool = True,
    top_folder: str | None = None,
    **kwargs,
) -> Path:
    """Zip a generated set to ``path``; members sit at top level or under ``top_folder/``.

    Extra keyword arguments go to ``make_ksdd2_folder``.
    """
    path = Path(path)
    prefix = f"{top_folder}/" if top_folder else ""
    with tempfile.TemporaryDirectory() as tmp:
        make_ksdd2_folder(tmp, n_train, n_test, with_copy_pair=with_copy_pair, **kwargs)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            if prefix:
                zf.writestr(prefix, "")
            for split in ("train", "test"):
                zf.writestr(f"{prefix}{split}/", "")  # explicit folder entries, as zip tools add
                for p in sorted((Path(tmp) / split).iterdir()):
                    zf.write(p, f"{prefix}{split}/{p.name}")
    return path
