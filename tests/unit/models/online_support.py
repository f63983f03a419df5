"""Shared by the learning-on-the-line tests: a small saved dual model with a stored threshold,
and an image that is clearly defective (a dark block painted on a normal image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dualpatch import DualPatchCore, PatchCore
from dualpatch.threshold import calibrate
from tests.support.common import TINY, tiny_params


def save_dual(demo_train, folder: Path) -> Path:
    """A dual model fit on 6 normal images and 6 crops, threshold from 4 held-out normals."""
    model = DualPatchCore(**tiny_params()).fit(
        demo_train.normal()[:6], demo_train.defect_crops(TINY)[:6]
    )
    calibrate(model, held_out(demo_train))
    return model.save(folder)


def held_out(demo_train) -> list:
    return demo_train.normal()[6:10]


def fresh(folder: Path) -> PatchCore:
    """A new copy of the saved model: every test changes the banks of its own copy."""
    return PatchCore.load(folder)


def painted(sample, folder: Path, name: str = "painted.png") -> Path:
    """``sample``'s image with a dark block over a third of it: a defect no bank has seen."""
    image = np.array(sample.image()).copy()
    h, w = image.shape[:2]
    image[h // 3 : 2 * h // 3, w // 4 : 3 * w // 4] = 10
    path = folder / name
    Image.fromarray(image).save(path)
    return path
