"""Defect crops: one padded box per connected mask region, which feeds the defect bank.

``connected_regions`` is the one place that cuts boxes around connected defect regions: the defect
crops here, the crop folders of ``dualpatch data crops`` and the synthetic generators' defect
shapes (``augment/sources.py``) all use it.

Regions are found at the mask's native resolution when it is given (``native_regions``): a thin
crack that is one region in the annotation breaks into fragments once the mask is downscaled to
the model's size (KolektorSDD's default training split: 34 native regions, 68 at 320x128), and one
crop per fragment would put the same defect into the bank several times, some crops holding one
pixel of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Region:
    """One 8-connected region of a mask: its box and its own pixels inside that box."""

    box: tuple[int, int, int, int]  # y0, x0, y1, x1 in the mask
    mask: np.ndarray  # bool, the box's size: this region's pixels only (not its neighbours')
    area: int  # pixels of the region (all inside the box)


@dataclass
class DefectCrop:
    """A defect cut out of an image: pixels, mask of the same size and where it came from.

    ``sha256`` and ``mask_sha256`` are the digests of the files a crop was read from (a crop
    folder), empty for crops cut in memory.
    """

    image: np.ndarray  # hxwx3 uint8
    mask: np.ndarray  # hxw bool
    source: str
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 in the source image
    sha256: str = ""
    mask_sha256: str = ""


def connected_regions(mask: np.ndarray, padding: int = 0, min_size: int = 0) -> list[Region]:
    """Every 8-connected region of ``mask``, in label order (row-major by first pixel).

    Each box is padded by ``padding`` pixels and grown to at least ``min_size`` on each side,
    clipped to the mask.
    """
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    h, w = mask.shape
    regions = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, y1 = _grow(sl[0].start - padding, sl[0].stop + padding, min_size, h)
        x0, x1 = _grow(sl[1].start - padding, sl[1].stop + padding, min_size, w)
        own = labels[y0:y1, x0:x1] == i
        regions.append(Region((y0, x0, y1, x1), own, int(own.sum())))
    return regions


def native_regions(
    native: np.ndarray, size: tuple[int, int], padding: int = 0, min_size: int = 0
) -> list[Region]:
    """One region at ``size`` per 8-connected region of the ``native`` mask, in its label order.

    Each native region is resized alone (nearest neighbour, as every mask): its pixels at
    ``size`` are its own, however many fragments they form, and a region too small to keep a
    pixel keeps the one under its centre, so no annotated defect is lost. Boxes are padded and
    grown as in ``connected_regions``.
    """
    from dualpatch.data.images import resize_mask

    h, w = size
    regions = []
    for r in connected_regions(native):
        y0, x0, y1, x1 = r.box
        alone = np.zeros(native.shape, dtype=bool)
        alone[y0:y1, x0:x1] = r.mask
        small = resize_mask(alone, size)
        if not small.any():  # below one pixel at this size: the pixel under its centre
            cy, cx = ndimage.center_of_mass(alone)
            small[
                min(int(cy * h / native.shape[0]), h - 1), min(int(cx * w / native.shape[1]), w - 1)
            ] = True
        ys, xs = np.nonzero(small)
        by0, by1 = _grow(int(ys.min()) - padding, int(ys.max()) + 1 + padding, min_size, h)
        bx0, bx1 = _grow(int(xs.min()) - padding, int(xs.max()) + 1 + padding, min_size, w)
        own = small[by0:by1, bx0:bx1]
        regions.append(Region((by0, bx0, by1, bx1), own, int(own.sum())))
    return regions


def extract_defect_crops(
    image: np.ndarray,
    mask: np.ndarray,
    padding: int = 16,
    min_size: int = 32,
    source: str = "",
    native: np.ndarray | None = None,
) -> list[DefectCrop]:
    """Cut one crop per 8-connected mask component: of ``native`` (the mask at the image's own
    resolution, ``native_regions``) when given, else of ``mask``.

    Each box is padded by ``padding`` pixels and grown to at least ``min_size`` on each side
    (clipped to the image), so that even a thin scratch spans a few feature-map cells.
    """
    crops = []
    if native is not None and native.shape != mask.shape:
        regions = native_regions(native, mask.shape, padding, min_size)
    else:
        regions = connected_regions(mask, padding, min_size)
    for region in regions:
        y0, x0, y1, x1 = region.box
        crops.append(DefectCrop(image[y0:y1, x0:x1].copy(), region.mask, source, region.box))
    return crops


def _grow(lo: int, hi: int, min_len: int, limit: int) -> tuple[int, int]:
    lo, hi = max(lo, 0), min(hi, limit)
    missing = min(min_len, limit) - (hi - lo)
    if missing > 0:
        lo = max(0, lo - missing // 2)
        hi = min(limit, lo + min(min_len, limit))
        lo = max(0, hi - min(min_len, limit))
    return lo, hi
