"""What feeds the defect bank: mask patches of whole images, crops, and synthetic folders."""

from __future__ import annotations

import pytest
import torch

from dualpatch import DualPatchCore
from dualpatch.data import Sample
from dualpatch.errors import DataError
from tests.support.common import TINY, tiny_params


def _all() -> dict:
    """Tiny model settings with a bank floor above any patch count: nothing is subsampled."""
    return {**tiny_params(), "coreset_min": 10_000}


def _cells(sample: Sample, grid) -> torch.Tensor:
    """(h, w) bool: the 8x8-pixel cells (the feature stride at TINY) holding a defect pixel,
    found by cutting the mask into blocks, not by the pooling that ``mask_cells`` uses."""
    h, w = grid
    assert (h * 8, w * 8) == TINY
    blocks = sample.mask(TINY).astype(bool).reshape(h, 8, w, 8)
    return torch.from_numpy(blocks.any(axis=(1, 3)))


def test_defect_bank_takes_exactly_the_patches_under_the_masks(demo_train, tiny_normal):
    defective = demo_train.defective()[:4]
    model = DualPatchCore(**_all()).fit(tiny_normal, defective)
    expected = sum(int(_cells(s, model.grid_).sum()) for s in defective)
    assert model.defect_memory_.bank_.shape[0] == expected > 0
    # the same rows as the whole-image features at those cells, and no other cell's features
    feats = model.image_features(defective[:1])[0]
    cells = _cells(defective[0], model.grid_)
    bank = model.defect_memory_.bank_
    assert torch.cdist(feats[cells], bank).min(1).values.max() < 1e-4
    outside = torch.cdist(feats[~cells], bank).min(1).values
    assert outside.min() > 1e-3


def test_images_and_crops_can_be_mixed(demo_train, tiny_normal, tiny_crops):
    images = demo_train.defective()[:2]
    both = DualPatchCore(**_all()).fit(tiny_normal, images + tiny_crops)
    only_images = DualPatchCore(**_all()).fit(tiny_normal, images)
    assert both.defect_memory_.bank_.shape[0] > only_images.defect_memory_.bank_.shape[0]


def test_defective_images_with_empty_masks_give_an_empty_bank_error(demo_train, tiny_normal):
    blank = [Sample(s.id, s.image_path, None, 1) for s in demo_train.defective()[:2]]
    with pytest.raises(DataError, match="defect bank is empty"):
        DualPatchCore(**tiny_params()).fit(tiny_normal, blank)


def test_synthetic_folder_feeds_the_bank_as_images(tmp_path, demo_root, demo_train, tiny_normal):
    from dualpatch.augment import augmented_samples, generate
    from dualpatch.experiment.inputs import defect_inputs, synthetic_defects

    generate("paste", "demo", demo_root, tmp_path / "paste", n=4, seed=1, progress=False)
    samples = augmented_samples([tmp_path / "paste"])
    assert len(samples) == 4 and all(s.label == 1 for s in samples)
    assert len(augmented_samples([tmp_path / "paste"], limit=2)) == 2
    real = defect_inputs(demo_train, "image", TINY)
    with_synthetic = defect_inputs(demo_train, "image", TINY, [tmp_path / "paste"])
    assert len(with_synthetic) == len(real) + 4
    crops = synthetic_defects([tmp_path / "paste"], "crop", TINY, limit=3)
    assert crops and all(c.image.shape[:2] == c.mask.shape for c in crops)
    model = DualPatchCore(**_all())
    model.fit(tiny_normal, real[:2] + samples)
    alone = DualPatchCore(**_all()).fit(tiny_normal, real[:2])
    assert model.defect_memory_.bank_.shape[0] > alone.defect_memory_.bank_.shape[0]
