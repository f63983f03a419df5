"""Foreign frames: inputs a detector has never seen and must never pass as good.

A dead camera (black, white or grey frame), sensor noise, a lens out of focus, the part mounted
the wrong way round, or another product altogether. Whatever the normal and defect banks hold, a
model that calls one of these "ok" would ship a fault; the foreign-frame tests and benchmark score
each of them at the model's stored threshold and expect every one flagged.

``foreign_frames`` builds them as arrays at the model's input size; ``other_dataset_frames`` takes
images from another dataset; ``write_frames`` puts either on disk as ``Sample`` records, which is
what the estimators score.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from dualpatch.data.base import Sample
from dualpatch.data.images import Size, resize_image
from dualpatch.errors import DataError
from dualpatch.fileio import write_image

#: the synthetic foreign frames, in the order ``foreign_frames`` returns them
FOREIGN_KINDS = ("black", "white", "grey", "noise", "blur", "rotated")
#: Gaussian blur radius as a fraction of the image's shorter side: strong enough that no surface
#: texture survives (a lens far out of focus), not so strong that the frame becomes flat grey
BLUR_FRACTION = 0.08


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DataError(f"foreign frames need uint8 images, not {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"foreign frames need HxW or HxWx3 images, not shape {image.shape}")
    return image


def foreign_frames(
    reference_images: Sequence[np.ndarray], size: Size, seed: int = 0
) -> dict[str, np.ndarray]:
    """Foreign frames at ``size`` = (H, W), as HxWx3 uint8 RGB, by name (``FOREIGN_KINDS``).

    ``black``, ``white``, ``grey`` (128): flat frames of a dead or saturated camera; ``noise``:
    uniform noise in [0, 255] (seeded); ``blur``: a normal image under a strong Gaussian blur;
    ``rotated``: a normal image turned 90 degrees and resized back to ``size`` (the part mounted
    the wrong way). The last two use a seeded pick of ``reference_images`` (normal images, any
    size, uint8 HxW or HxWx3).
    """
    if not reference_images:
        raise DataError("foreign frames need at least one normal reference image")
    h, w = size
    rng = np.random.default_rng(seed)
    reference = _rgb(reference_images[int(rng.integers(len(reference_images)))])
    reference = resize_image(reference, size)
    radius = max(1.0, BLUR_FRACTION * min(h, w))
    blurred = np.asarray(Image.fromarray(reference).filter(ImageFilter.GaussianBlur(radius)))
    rotated = resize_image(np.ascontiguousarray(np.rot90(reference)), size)
    return {
        "black": np.zeros((h, w, 3), np.uint8),
        "white": np.full((h, w, 3), 255, np.uint8),
        "grey": np.full((h, w, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8),
        "blur": blurred,
        "rotated": rotated,
    }


def other_dataset_frames(
    samples: Sequence[Sample], size: Size, n: int = 4, seed: int = 0, prefix: str = "other"
) -> dict[str, np.ndarray]:
    """``n`` images (a seeded draw, all of them if fewer) of another dataset's ``samples``,
    resized to ``size``, named ``{prefix}-{sample id}``: another product under the camera."""
    if not samples:
        raise DataError("no images of the other dataset to draw foreign frames from")
    picks = np.random.default_rng(seed).permutation(len(samples))[:n]
    return {
        f"{prefix}-{samples[i].id}": resize_image(samples[i].image(), size)
        for i in sorted(picks.tolist())
    }


def write_frames(frames: dict[str, np.ndarray], folder: str | os.PathLike[str]) -> list[Sample]:
    """Write ``frames`` as ``folder``/NAME.png and return them as good-labelled ``Sample`` records
    (label 0: a foreign frame has no defect mask; the test is that it is flagged anyway)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for name, image in frames.items():
        # sample ids of other datasets may hold path separators: one flat folder of files
        path = folder / f"{name.replace('/', '_').replace(os.sep, '_')}.png"
        write_image(path, _rgb(image))
        samples.append(Sample(f"foreign-{name}", path, None, 0))
    return samples
