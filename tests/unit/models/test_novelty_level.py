"""The label-free novelty level (banks.leave_image_out_level): each training image scored against
the bank rows that did not come from it, checked against a brute-force float64 computation."""

from __future__ import annotations

import pytest
import torch

from dualpatch import DualPatchCore
from dualpatch.errors import DataError
from dualpatch.models import banks
from tests.support.common import tiny_params


def brute_force_level(model, feats: torch.Tensor) -> float:
    bank = model.memory_.bank_.double()
    levels = []
    for image in feats.double():
        rows = image.reshape(-1, bank.shape[1])
        own = (bank[:, None, :] == rows[None]).all(-1).any(1)  # bank rows copied from this image
        dist = torch.cdist(rows, bank[~own])
        levels.append(float(dist.min(1).values.max()))
    return max(levels)


def test_leave_image_out_matches_brute_force(tiny_normal, tiny_crops):
    model = DualPatchCore(**tiny_params()).fit(tiny_normal, tiny_crops)
    feats = model.image_features(tiny_normal, None)
    level, measured = banks.leave_image_out_level(model, feats)
    assert measured == len(tiny_normal)
    assert level == pytest.approx(brute_force_level(model, feats), rel=1e-4)
    assert model.novelty_level_ == pytest.approx(level)
    # with its own rows in the bank, each image's largest distance is lower: they were left out
    with_own, _ = model.memory_.query(feats.reshape(-1, feats.shape[-1]).float(), 1)
    assert float(with_own.max()) < level


def test_one_training_image_uses_the_bank_spread(tiny_normal, tiny_crops):
    model = DualPatchCore(**tiny_params()).fit(tiny_normal[:1], tiny_crops)
    assert model.novelty_level_record_["images"] == 0  # every bank row is that image's own
    bank = model.memory_.bank_.double()
    dist = torch.cdist(bank, bank) + torch.eye(bank.shape[0]) * 1e9
    assert model.novelty_level_ == pytest.approx(float(dist.min(1).values.max()), rel=1e-4)


def test_a_zero_level_is_floored_never_damping(fitted_dual):
    import copy

    from dualpatch.models.dual import MIN_NOVELTY_LEVEL

    model = copy.copy(fitted_dual)
    model.set_novelty_level(0.0, {"method": "held-out", "images": 3})
    assert model.novelty_level_ == MIN_NOVELTY_LEVEL
    assert model.novelty_level_record_["floored"] is True
    for bad in (float("nan"), -1.0):
        with pytest.raises(DataError, match="not a distance"):
            model.set_novelty_level(bad, {})
