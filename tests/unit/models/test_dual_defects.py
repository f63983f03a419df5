"""What feeds the defect bank: mask patches of whole images, crops, and synthetic folders."""

from __future__ import annotations

import json

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


#: a larger input than TINY: at 64x32 every feature cell's receptive field spans the whole image
OWN = (128, 64)


def _own(tmp_path, n_normal: int = 6):
    """(normal samples, a red-blotched defective image's sample without a mask, its box mask
    file), at ``OWN``: textures from tests.support, the blotch far from every normal patch."""
    from tests.support.bad_input import box_mask, save, texture

    normal = [
        Sample(f"g{i}", save(tmp_path / f"good {i}.png", texture(i, *OWN)), None, 0)
        for i in range(n_normal)
    ]
    img = texture(99, *OWN)
    img[box_mask(*OWN) > 0] = [250, 30, 30]
    path = save(tmp_path / "scratch.png", img)
    mask = save(tmp_path / "scratch_mask.png", box_mask(*OWN))
    return normal, Sample("scratch", path, None, 1), mask


def test_unmasked_defect_feeds_the_bank_by_its_pseudo_mask(tmp_path):
    """Its patches above the normal bank's novelty level: the blotch's cells and the context that
    sees it (not the rest of the image), recorded as pseudo in model.json."""
    from dualpatch.fileio import sha256_file
    from dualpatch.models.defect_features import pseudo_cells

    normal, unmasked, mask = _own(tmp_path)
    model = DualPatchCore(**{**_all(), "image_size": OWN}).fit(normal, [unmasked])
    feats = model.image_features([unmasked])[0]
    cells = pseudo_cells(model.memory_, model.novelty_level_, model.num_neighbors, feats)
    h, w = model.grid_
    blocks = Sample("scratch", unmasked.image_path, mask, 1).mask(OWN).reshape(h, 8, w, 8)
    truth = torch.from_numpy(blocks.any(axis=(1, 3)))
    assert bool((cells | ~truth).all())  # every blotch cell is found
    assert int(cells.sum()) < h * w * 3 // 4  # the far side of the image is not
    assert model.defect_memory_.bank_.shape[0] == int(cells.sum())
    exact = "donot_use_mm_for_euclid_dist"  # the matmul form is off by ~0.05 at these norms
    bank = model.defect_memory_.bank_
    assert torch.cdist(feats[cells], bank, compute_mode=exact).min(1).values.max() < 1e-4
    assert model.pseudo_masks_ == [
        {"file": "scratch.png", "sha256": sha256_file(unmasked.image_path),
         "patches": int(cells.sum())}
    ]  # fmt: skip
    # the level is tau: a patch at or below it is not taken
    dist, _ = model.memory_.query(feats.reshape(-1, feats.shape[-1]), model.num_neighbors)
    assert (dist.mean(-1).reshape(cells.shape) > model.novelty_level_).eq(cells).all()
    # model.json labels them (a normal bank with a coreset: one copying every training patch has
    # no map scale to save), and a masked fit records none
    saved = DualPatchCore(**{**tiny_params(), "image_size": OWN}).fit(normal, [unmasked])
    saved.save(tmp_path / "m")
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["pseudo_masks"] == saved.pseudo_masks_ and saved.pseudo_masks_[0]["patches"] > 0
    assert DualPatchCore.load(tmp_path / "m").pseudo_masks_ == saved.pseudo_masks_
    masked = Sample("scratch", unmasked.image_path, mask, 1)
    plain = DualPatchCore(**{**tiny_params(), "image_size": OWN}).fit(normal, [masked])
    assert plain.pseudo_masks_ == []
    plain.save(tmp_path / "plain")
    assert "pseudo_masks" not in json.loads((tmp_path / "plain" / "model.json").read_text())


def test_unseen_normal_image_gives_no_pseudo_mask_and_one_warning(tmp_path):
    normal, unmasked, mask = _own(tmp_path)
    unseen = Sample("plain", normal[0].image_path, None, 1)  # a normal image left out of the bank
    masked = Sample("scratch", unmasked.image_path, mask, 1)
    params = {**_all(), "image_size": OWN}
    with pytest.warns(UserWarning, match=r"1 of 1 defective images without a mask have no patch "
                      r"above the normal bank's novelty level \(e.g. good 0.png\)"):  # fmt: skip
        model = DualPatchCore(**params).fit(normal[1:], [masked, unseen])
    assert [r["patches"] for r in model.pseudo_masks_] == [0]
    with pytest.raises(DataError, match="no defect pixels under the masks or pseudo-masks"):
        DualPatchCore(**params).fit(normal[1:], [unseen])
