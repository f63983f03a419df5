"""The safety suite's derived images, written once and scored like any other sample.

* ``pasted``: for every normal image of a dataset, one copy with a defect of ANOTHER dataset
  Poisson-blended in (``augment.paste._blend``, the exact solve). The copy's index picks the
  source dataset and the defect (seeded), so a fold's unseen-defect set is the pasted copies of
  that fold's own normal images: no image crosses a split.
* ``foreign``: black/white/grey/noise/blur/rot90 frames (``data.foreign``) from a set of normal
  images, and other datasets' images at the model size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from scipy import ndimage

from dualpatch.augment.paste import RIM, _blend
from dualpatch.augment.sources import defect_shapes, place
from dualpatch.data.base import Sample
from dualpatch.data.foreign import foreign_frames, other_dataset_frames, write_frames
from dualpatch.fileio import write_image

#: foreign frames per fold: this many seeds of ``foreign_frames`` (each seed draws its own
#: reference image for blur and rot90 and its own noise), and images of each other dataset
FOREIGN_SEEDS = 3
OTHER_IMAGES = 8
#: normal images of a dataset that get a pasted copy: the ones lowest in a fixed hash order, so
#: that every fold and validation set draws its unseen-defect set from one shared pool (a CPU cut:
#: each copy is a sparse Poisson solve at full size, and each scored image a bank search)
PASTED_POOL = 180


def _stable_seed(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def _as_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """HxWx3 uint8 -> HxWx``channels`` (grey = channel mean, as the target data is grey)."""
    if channels == 1:
        return np.rint(image.astype(np.float64).mean(axis=2, keepdims=True)).astype(np.uint8)
    return image


def pasted_set(name: str, normals: list[Sample], others: dict[str, list[Sample]], work: Path,
               grey: bool) -> dict[str, Sample]:  # fmt: skip
    """{normal sample id: its pasted copy (label 1, mask = blended region)} for the
    ``PASTED_POOL`` normals first in hash order; written once."""
    normals = sorted(normals, key=lambda s: _stable_seed(f"{name}/{s.id}"))[:PASTED_POOL]
    folder = work / "pasted" / name
    folder.mkdir(parents=True, exist_ok=True)
    shapes = {k: None for k in others}
    out = {}
    for normal in normals:
        seed = _stable_seed(f"{name}/{normal.id}")
        rng = np.random.default_rng(seed)
        source = sorted(others)[int(rng.integers(len(others)))]
        stem = f"{normal.id.replace('/', '_')}__{source}"
        img_path, mask_path = folder / f"{stem}.png", folder / f"{stem}_mask.png"
        if not img_path.exists():
            if shapes[source] is None:
                shapes[source] = defect_shapes(
                    [s for s in others[source] if s.label == 1], pad=RIM + 1
                )
            shape = shapes[source][int(rng.integers(len(shapes[source])))]
            channels = 1 if grey else 3
            dst = _as_channels(normal.image(), channels)
            src = _as_channels(shape.sample.image(), channels)
            y0, x0, y1, x1 = shape.box
            region = ndimage.binary_dilation(shape.mask, iterations=RIM)
            where = place(rng, shape, dst.shape[:2], scale=(1.0, 1.0), shift=0.3, flip=False)
            mask = where.on_canvas(region, dst.shape[:2])
            patch = where.on_canvas(src[y0:y1, x0:x1], dst.shape[:2])
            image = _blend(patch, dst, mask)
            write_image(mask_path, (mask * 255).astype(np.uint8))
            write_image(img_path, image[..., 0] if grey else image)
        out[normal.id] = Sample(f"pasted/{stem}", img_path, mask_path, 1)
    return out


def foreign_set(normals: list[Sample], others: dict[str, list[Sample]], size, folder: Path,
                seed: int) -> list[Sample]:  # fmt: skip
    """Foreign frames built from ``normals`` and drawn from the other datasets, as samples."""
    refs = [s.image() for s in normals]
    frames: dict[str, np.ndarray] = {}
    for k in range(FOREIGN_SEEDS):
        for kind, arr in foreign_frames(refs, size, seed=seed + k).items():
            frames.setdefault(kind if kind in ("black", "white", "grey") else f"{kind}{k}", arr)
    for other, samples in sorted(others.items()):
        frames.update(other_dataset_frames(samples, size, OTHER_IMAGES, seed, prefix=other))
    return write_frames(frames, folder)
