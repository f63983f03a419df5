"""A defective image without a mask counts for the image metrics and is left out of the pixel
metrics (its defect pixels are unknown: all-normal would be a false ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from dualpatch.metrics.evaluation import evaluate


def test_pixel_metrics_leave_out_images_without_a_mask():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 8, 8), bool)
    masks[1, 2:4, 2:4] = True
    maps = rng.random((3, 8, 8)) * 0.1
    maps[1, 2:4, 2:4] = 1.0  # the masked defect: found exactly
    maps[2] = 1.0  # the unmasked defect: hot everywhere, its mask (all False) would say normal
    labels, scores = np.array([0, 1, 1]), np.array([0.1, 1.0, 1.0])
    blind = evaluate(labels, scores, masks, maps)
    known = evaluate(labels, scores, masks, maps, known=np.array([True, True, False]))
    assert blind["pixel_auroc"] < 0.9
    assert known["pixel_auroc"] == pytest.approx(1.0)
    assert known["image_auroc"] == blind["image_auroc"] == 1.0  # image metrics keep all three
