"""A placed defect's mask and its pixels are scaled on one grid, so the mask covers the defect."""

from __future__ import annotations

import numpy as np
import pytest

from dualpatch.augment.sources import Placement


@pytest.mark.parametrize("size", [(9, 6), (13, 11), (5, 4), (17, 3)])
@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True)])
def test_scaled_mask_matches_the_scaled_pixels(size, flips):
    rng = np.random.default_rng(sum(size))
    mask = rng.random((7, 5)) < 0.5
    mask[3, 2] = True
    pixels = mask.astype(np.uint8) * 255  # the defect's pixels: bright exactly where the mask is
    where = Placement(*flips, size, 0, 0)
    placed_mask = where.apply(mask)
    placed_pixels = where.apply(pixels[..., None])[..., 0]
    assert placed_mask.shape == size
    # the mask marks the pixels that came out mostly defect, and only those
    assert np.array_equal(placed_mask, placed_pixels >= 128)


def test_unscaled_placement_leaves_the_mask_as_it_is():
    mask = np.zeros((4, 6), bool)
    mask[1, 1:4] = True
    where = Placement(True, False, (4, 6), 2, 3)
    assert np.array_equal(where.apply(mask), mask[:, ::-1])
