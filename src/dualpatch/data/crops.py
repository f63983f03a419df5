"""Defect crops: one padded box per connected mask region, which feeds the defect bank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class DefectCrop:
    """A defect cut out of an image: pixels, mask of the same size and where it came from."""

    image: np.ndarray  # hxwx3 uint8
    mask: np.ndarray  # hxw bool
    source: str
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 in the source image


def extract_defect_crops(
    image: np.ndarray,
    mask: np.ndarray,
    padding: int = 16,
    min_size: int = 32,
    source: str = "",
) -> list[DefectCrop]:
    """Cut one crop per 8-connected mask component.

    Each box is padded by ``padding`` pixels and grown to at least ``min_size`` on each side
    (clipped to the image), so that even a thin scratch spans a few feature-map cells.
    """
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    crops = []
    h, w = mask.shape
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, y1 = sl[0].start - padding, sl[0].stop + padding
        x0, x1 = sl[1].start - padding, sl[1].stop + padding
        y0, y1 = _grow(y0, y1, min_size, h)
        x0, x1 = _grow(x0, x1, min_size, w)
        crops.append(
            DefectCrop(
                image=image[y0:y1, x0:x1].copy(),
                mask=(labels[y0:y1, x0:x1] == i),
                source=source,
                box=(y0, x0, y1, x1),
            )
        )
    return crops


def _grow(lo: int, hi: int, min_len: int, limit: int) -> tuple[int, int]:
    lo, hi = max(lo, 0), min(hi, limit)
    missing = min(min_len, limit) - (hi - lo)
    if missing > 0:
        lo = max(0, lo - missing // 2)
        hi = min(limit, lo + min(min_len, limit))
        lo = max(0, hi - min(min_len, limit))
    return lo, hi
