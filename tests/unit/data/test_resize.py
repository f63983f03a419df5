"""The OpenCV-grid resizes of ``data.images.resize``: bit for bit what ``cv2.resize`` gives (the
synthetic-defect placements were made with it), and where they part from PIL's filters."""

from __future__ import annotations

import numpy as np
import pytest

from dualpatch.augment.sources import Placement
from dualpatch.data.images import resize

cv2 = pytest.importorskip("cv2")  # a dependency (Poisson blending); the reference here


def _sizes(rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """(H, W, h, w): placement-like scales, any sizes, exact halvings and doublings."""
    cases = []
    for _ in range(120):
        rows, cols = (int(v) for v in rng.integers(1, 120, 2))
        s = rng.uniform(0.5, 1.5)
        cases.append((rows, cols, max(1, round(rows * s)), max(1, round(cols * s))))
    cases += [tuple(int(v) for v in rng.integers(1, 90, 4)) for _ in range(60)]
    for _ in range(10):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        cases += [(2 * h, 2 * w, h, w), (h, w, 2 * h, 2 * w)]
    return [c for c in cases if c[:2] != c[2:]]


@pytest.mark.parametrize("channels", [0, 1, 3, 4])
def test_opencv_grid_resizes_equal_cv2_bit_for_bit(channels):
    rng = np.random.default_rng(channels)
    for rows, cols, h, w in _sizes(rng):
        shape = (rows, cols) if channels == 0 else (rows, cols, channels)
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        linear = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_LINEAR).reshape(
            h, w, *shape[2:]
        )
        nearest = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_NEAREST).reshape(linear.shape)
        assert np.array_equal(resize(pixels, (h, w), "opencv-linear"), linear), (shape, h, w)
        assert np.array_equal(resize(pixels, (h, w), "opencv-nearest"), nearest), (shape, h, w)
        mask = pixels[..., 0] > 127 if channels else pixels > 127
        want = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        got = resize(mask, (h, w), "opencv-linear")  # a mask is resized nearest, whatever asked
        assert got.dtype == bool and np.array_equal(got, want), (shape, h, w)


def test_opencv_nearest_samples_corners_where_pil_samples_centres():
    """Why a placed mask moves under PIL: 4 -> 5 pixels, OpenCV reads source floor(i * 0.8),
    PIL floor((i + 0.5) * 0.8)."""
    row = np.array([[10, 20, 30, 40]], dtype=np.uint8)
    assert resize(row, (1, 5), "opencv-nearest").tolist() == [[10, 10, 20, 30, 40]]
    assert resize(row, (1, 5), "nearest").tolist() == [[10, 20, 30, 30, 40]]
    # 6 -> 4 of a ramp 40 * i: OpenCV mixes the 2 pixels around centres 0.25, 1.75, 3.25, 4.75;
    # PIL's kernel, widened 1.5x to shrink, mixes more (and clips at the ends)
    ramp = np.arange(6, dtype=np.uint8)[None] * 40
    assert resize(ramp, (1, 4), "opencv-linear").tolist() == [[10, 70, 130, 190]]
    assert resize(ramp, (1, 4), "bilinear").tolist() != [[10, 70, 130, 190]]


def test_placement_scales_as_cv2_did():
    """Placement.apply gives what cv2.resize gives: pixels linear, and masks linear as 0/255 kept
    where at least half defect (on the pixels' grid; they were nearest, half a pixel off it)."""
    rng = np.random.default_rng(5)
    for _ in range(40):
        rows, cols = (int(v) for v in rng.integers(2, 60, 2))
        h, w = (max(1, round(n * rng.uniform(0.75, 1.25))) for n in (rows, cols))
        where = Placement(bool(rng.random() < 0.5), bool(rng.random() < 0.5), (h, w), 0, 0)
        pixels = rng.integers(0, 256, size=(rows, cols, 3), dtype=np.uint8)
        flipped = pixels[:, ::-1] if where.flip_h else pixels
        flipped = np.ascontiguousarray(flipped[::-1] if where.flip_v else flipped)
        want = cv2.resize(flipped, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(where.apply(pixels), want)
        mask = pixels[..., 0] > 100
        levels = np.ascontiguousarray(flipped[..., 0] > 100).astype(np.uint8) * 255
        want = cv2.resize(levels, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(where.apply(mask), want >= 128)


def test_opencv_linear_refuses_float_data():
    with pytest.raises(ValueError, match="uint8 or bool"):
        resize(np.zeros((4, 4), np.float32), (3, 3), "opencv-linear")
