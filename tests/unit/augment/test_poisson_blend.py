"""Poisson blending of copy-paste (``paste._blend``): known answers on tiny images."""

from __future__ import annotations

import numpy as np

from dualpatch.augment.paste import _blend


def _disc(shape=(24, 20), centre=(11, 9), radius=6.0) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_a_brightness_offset_is_blended_away_and_outside_is_untouched():
    rng = np.random.default_rng(0)
    dst = rng.integers(60, 180, size=(24, 20, 1), dtype=np.uint8)
    src = dst + np.uint8(40)  # same texture, 40 brighter: same gradients
    mask = _disc()
    out = _blend(src, dst, mask)
    # only the gradients are pasted, and they are dst's own: the solution is dst itself
    assert np.array_equal(out, dst)


def test_a_dark_defect_keeps_its_contrast_on_another_background():
    mask = _disc()
    src = np.full((24, 20, 3), 200, np.uint8)
    src[9:14, 7:12] = 60  # a dark spot, 140 below its own surface, well inside the mask
    dst = np.full((24, 20, 3), 180, np.uint8)
    out = _blend(src, dst, mask)
    # the exact solution is src shifted onto dst's level: src - 20 inside the mask
    want = dst.copy()
    want[mask] = src[mask] - 20
    assert np.array_equal(out, want)


def test_blending_is_deterministic_and_never_writes_the_image_border():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    dst = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    mask = np.zeros((12, 10), bool)
    mask[:6, :5] = True  # touches the top and left image borders
    first = _blend(src, dst, mask)
    assert np.array_equal(first, _blend(src, dst, mask))
    assert np.array_equal(first[0], dst[0]) and np.array_equal(first[:, 0], dst[:, 0])
    assert not np.array_equal(first[1:6, 1:5], dst[1:6, 1:5])
    assert np.array_equal(_blend(src, dst, np.zeros((12, 10), bool)), dst)
