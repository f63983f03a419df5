"""Helpers of the bad-input tests (tests/bad_input/): the one ``error:`` line, snapshots of folders,
and tiny datasets in each loader's layout.

The fixtures they share (``cli``: the command line in this process; ``model_dir``: a tiny saved
model) are in ``tests/bad_input/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.common import TINY

# ----------------------------------------------------------------------------- what the CLI said


def error_line(err: str, *needles) -> str:
    """The one ``error:`` line of ``err``, which must name every one of ``needles``."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, f"expected exactly one error line:\n{err}"
    for needle in needles:
        assert str(needle) in lines[0], (str(needle), lines[0])
    return lines[0]


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, hidden temporary files included."""
    files = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


# ----------------------------------------------------------------------------- tiny datasets


def texture(seed: int, h: int = TINY[0], w: int = TINY[1]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gray = rng.normal(0.5, 0.1, (h, w)) + 0.2 * ((np.arange(w) // 6) % 2)[None, :]
    return (np.clip(gray, 0, 1)[..., None] * [255, 200, 150]).astype(np.uint8)


def box_mask(h: int = TINY[0], w: int = TINY[1], value: int = 255) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3 : h // 3 + 10, w // 4 : w // 4 + 8] = value
    return mask


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def make_folder(root: Path, train_defects: int = 1) -> Path:
    """MVTec layout: train/good (3), train/crack (+ masks), test/good (2), test/crack (2)."""
    for i in range(3):
        save(root / "train/good" / f"g{i}.png", texture(i))
    for i in range(train_defects):
        save(root / "train/crack" / f"t{i}.png", texture(10 + i))
        save(root / "ground_truth/crack" / f"t{i}_mask.png", box_mask())
    for i in range(2):
        save(root / "test/good" / f"tg{i}.png", texture(20 + i))
        save(root / "test/crack" / f"c{i}.png", texture(30 + i))
        save(root / "ground_truth/crack" / f"c{i}_mask.png", box_mask())
    return root


def make_ksdd2(root: Path) -> Path:
    """KSDD2 layout: train/1000N.png + _GT (3, one positive), test/2000N.png + _GT (2, one)."""
    for split, first, n in (("train", 10000, 3), ("test", 20000, 2)):
        for i in range(n):
            save(root / split / f"{first + i}.png", texture(first + i))
            save(root / split / f"{first + i}_GT.png", box_mask() if i == 0 else box_mask(value=0))
    return root


def make_kolektor(root: Path) -> Path:
    """KolektorSDD layout: kos01 (train) and kos34 (test), Part0 defective, labels 0/1/2 PNG."""
    for item, seed in (("kos01", 0), ("kos34", 50)):
        for i in range(3):
            save(root / item / f"Part{i}.jpg", texture(seed + i)[..., 0], quality=95)
            label = box_mask(value=2) if i == 0 else box_mask(value=0)
            label[0, 0] = 1 if i == 0 else 0
            save(root / item / f"Part{i}_label.png", label)
    return root


MAKERS = {"folder": make_folder, "ksdd2": make_ksdd2, "kolektorsdd": make_kolektor}


def make_augmented(root: Path, n: int = 2) -> Path:
    from dualpatch.augment.manifest import ManifestRow, write_manifest

    rows = []
    for i in range(n):
        save(root / "imgs" / f"{i:05d}.png", texture(40 + i))
        save(root / "masks" / f"{i:05d}.png", box_mask())
        rows.append(ManifestRow(f"imgs/{i:05d}.png", f"masks/{i:05d}.png", "src.png", "", i, ""))
    write_manifest(root, rows)
    return root
