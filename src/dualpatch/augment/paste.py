"""Copy-paste baseline: real training defects Poisson-blended onto normal training images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from ..data import Dataset
from ..data.crop_folder import CropRow, CropSpec
from ..events import track
from .manifest import ManifestRow, check_output, open_output
from .sources import data_channels, defect_shapes, place, read_pixels, training_sources

#: pixels of surface kept around each defect: Poisson blending needs a rim to match gradients on
RIM = 3


def generate_paste(
    dataset: Dataset,
    n: int,
    out: str | Path,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    force: bool = False,
    as_crops: CropSpec | None = None,
) -> list[ManifestRow] | list[CropRow]:
    """Write ``n`` images to ``out``: each a random normal training image with one real training
    defect (flipped, scaled 0.8-1.2x, moved) blended in by ``cv2.seamlessClone``.

    The written mask is the blended region (the defect's mask grown by ``RIM`` pixels), so pixels
    outside it equal the normal image's. Row ``i`` uses seed ``seed + i`` and is reproducible.
    ``as_crops`` writes each image's defect crops instead (see ``open_output``).
    """
    if as_crops is None:
        check_output(out, force, [dataset.root])
    normals, defects = training_sources(dataset)
    shapes = defect_shapes(defects, pad=RIM + 1)
    channels = data_channels(normals + defects)
    if log:
        log(f"paste: {len(shapes)} training defects onto {len(normals)} normal images")
    with open_output(out, as_crops, "paste", force, [dataset.root]) as writer:
        for i in track(range(n), "paste", progress=progress):
            rng = np.random.default_rng(seed + i)
            normal = normals[int(rng.integers(len(normals)))]
            shape = shapes[int(rng.integers(len(shapes)))]
            dst = read_pixels(normal, channels)
            src = read_pixels(shape.sample, channels)
            y0, x0, y1, x1 = shape.box
            # The grown region: defect plus rim, which seamlessClone re-solves from gradients.
            region = ndimage.binary_dilation(shape.mask, iterations=RIM)
            where = place(rng, shape, dst.shape[:2], scale=(0.8, 1.2), shift=0.3)
            mask = where.on_canvas(region, dst.shape[:2])
            patch = where.on_canvas(src[y0:y1, x0:x1], dst.shape[:2])
            image = _blend(patch, dst, mask)
            why = "source defect's own position (+-0.30 of the image), scale 0.8-1.2"
            writer.add(image, mask, normal.image_path, shape.sample.mask_path, seed + i,
                       placement=why)  # fmt: skip
    return writer.rows


def _blend(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson-blend ``src`` into ``dst`` inside ``mask`` (all one size); outside stays ``dst``."""
    three = lambda a: np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a  # noqa: E731
    m = mask.astype(np.uint8) * 255
    x, y, w, h = cv2.boundingRect(m)
    # seamlessClone centres the mask's bounding box on this point with integer halves: matching
    # that keeps the defect exactly where the mask says.
    center = (x + w // 2, y + h // 2)
    blended = cv2.seamlessClone(three(src), three(dst), m, center, cv2.NORMAL_CLONE)
    out = dst.copy()
    out[mask] = blended[mask][:, : dst.shape[2]]
    return out
