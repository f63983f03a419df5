"""Helpers of the DDPM tests (tests/unit/augment/): a scaled-down config, checks of a generated
folder, and a grayscale copy of the demo set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dualpatch.augment.ddpm import DDPMConfig
from dualpatch.augment.manifest import read_manifest
from dualpatch.data import MVTecFolder, read_image, read_mask

TINY = dict(channels=(8, 16), batch=4, sample_steps=3, save_every=1000)


def tiny(**kw) -> DDPMConfig:
    return DDPMConfig(**(TINY | kw))


def check_outputs(out: Path, n: int) -> list:
    """Every output has its source's size, a non-empty mask and the source's pixels outside it."""
    rows = read_manifest(out)
    assert len(rows) == n
    for r in rows:
        image, source = read_image(out / r.image), read_image(r.source_image)
        mask = read_mask(out / r.mask)
        assert image.shape == source.shape
        assert mask.any()
        assert np.array_equal(image[~mask], source[~mask])
        assert Path(r.source_mask).is_file()
    return rows


def gray_folder(demo_train, root: Path) -> MVTecFolder:
    """A few demo images as 8-bit grayscale in MVTec layout (train/good, train/crack + masks)."""
    for sub in ("train/good", "train/crack", "ground_truth/crack"):
        (root / sub).mkdir(parents=True)
    for s in demo_train.normal()[:4]:
        Image.fromarray(s.image()).convert("L").save(root / "train/good" / s.image_path.name)
    for s in demo_train.defective()[:3]:
        Image.fromarray(s.image()).convert("L").save(root / "train/crack" / s.image_path.name)
        mask = s.mask().astype(np.uint8) * 255
        Image.fromarray(mask).save(root / "ground_truth/crack" / f"{s.image_path.stem}_mask.png")
    return MVTecFolder(root, "train")
