"""Defect crops follow the mask's native 8-connected regions, not the fragments of the mask
downscaled to the model's size."""

from __future__ import annotations

import numpy as np

from dualpatch.data.crops import connected_regions, extract_defect_crops, native_regions
from dualpatch.data.images import resize_image, resize_mask

NATIVE, SIZE = (200, 80), (50, 20)


def crack_and_speck() -> np.ndarray:
    """A one-pixel-wide diagonal crack (one 8-connected region) and a one-pixel speck."""
    mask = np.zeros(NATIVE, dtype=bool)
    for i in range(120):
        mask[20 + i, 10 + i // 3] = True
    mask[180, 70] = True
    return mask


def test_a_thin_crack_is_one_crop_though_it_fragments_when_downscaled():
    native = crack_and_speck()
    assert len(connected_regions(native)) == 2
    small = resize_mask(native, SIZE)
    assert len(connected_regions(small)) > 2  # the crack breaks up and the speck vanishes
    image = resize_image(np.zeros((*NATIVE, 3), np.uint8), SIZE)
    crops = extract_defect_crops(image, small, padding=2, min_size=4, native=native)
    assert len(crops) == 2
    crack, speck = crops
    y0, x0, y1, x1 = crack.box
    alone = native.copy()
    alone[180, 70] = False
    np.testing.assert_array_equal(crack.mask, resize_mask(alone, SIZE)[y0:y1, x0:x1])
    assert crack.mask.sum() > 1
    # the speck keeps the pixel under it, at its place at the model's size
    assert speck.mask.sum() == 1
    (py, px), (sy0, sx0) = np.argwhere(speck.mask)[0], speck.box[:2]
    assert (sy0 + py, sx0 + px) == (180 * SIZE[0] // NATIVE[0], 70 * SIZE[1] // NATIVE[1])


def test_without_a_native_mask_or_at_native_size_the_mask_itself_is_cut():
    native = crack_and_speck()
    image = np.zeros((*NATIVE, 3), np.uint8)
    same = extract_defect_crops(image, native, 2, 4, native=native)
    plain = extract_defect_crops(image, native, 2, 4)
    assert (
        [c.box for c in same]
        == [c.box for c in plain]
        == [r.box for r in connected_regions(native, 2, 4)]
    )
    small = resize_mask(native, SIZE)
    assert len(extract_defect_crops(resize_image(image, SIZE), small, 2, 4)) == len(
        connected_regions(small, 2, 4)
    )


def test_native_regions_are_padded_and_grown_like_connected_regions():
    native = np.zeros(NATIVE, dtype=bool)
    native[100:104, 40:44] = True
    (region,) = native_regions(native, SIZE, padding=1, min_size=6)
    y0, x0, y1, x1 = region.box
    assert y1 - y0 == 6 and x1 - x0 == 6  # grown to min_size around the one-pixel region
    assert region.area == region.mask.sum() == 1
