"""The feature-space baseline: seeded, the right shape, and staying near the real defect rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualpatch import DualPatchCore
from dualpatch.errors import ConfigError
from dualpatch.features.augment import augment_defect_features
from tests.support.common import tiny_params


def rows(m: int = 30, d: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(m, d))).float()


@pytest.mark.parametrize("method", ["noise", "interpolate", "toward_normal"])
def test_shape_and_determinism(method):
    x = rows()
    far = torch.full((1, 6), 100.0)
    nearest = lambda r: far.expand(r.shape[0], -1)  # noqa: E731
    settings = {"method": method, "n": 50}
    a = augment_defect_features(x, settings, seed=3, nearest_normal=nearest)
    assert a.shape == (50, 6)
    assert torch.equal(a, augment_defect_features(x, settings, 3, nearest))
    assert not torch.equal(a, augment_defect_features(x, settings, 4, nearest))
    assert augment_defect_features(x, {"method": method}, 0, nearest).shape == x.shape


def test_interpolation_stays_inside_the_hull_and_toward_normal_moves_at_most_strength():
    x = rows()
    mixed = augment_defect_features(x, {"method": "interpolate", "n": 200, "strength": 1.0})
    assert (mixed >= x.min(0).values - 1e-6).all() and (mixed <= x.max(0).values + 1e-6).all()
    target = torch.full((1, 6), 10.0)
    moved = augment_defect_features(
        x, {"method": "toward_normal", "n": 200, "strength": 0.25}, 0,
        lambda r: target.expand(r.shape[0], -1),
    )  # fmt: skip
    # each new row is start + w (target - start), w in [0, 0.25]: it cannot pass a quarter way
    assert (moved <= 0.75 * x.max() + 0.25 * 10.0 + 1e-5).all()
    assert moved.mean() > x.mean()


def test_noise_follows_each_dimension_spread():
    x = rows(2000, 2) * torch.tensor([1.0, 10.0])
    new = augment_defect_features(x, {"method": "noise", "n": 4000, "strength": 1.0})
    ratio = new.std(0) / x.std(0)
    # start rows carry the spread once and the noise once more: sqrt(2) in each dimension
    assert torch.allclose(ratio, torch.full((2,), 2**0.5), rtol=0.08)


@pytest.mark.parametrize(
    "bad",
    [{"method": "blur"}, {"method": "noise", "n": 0}, {"method": "noise", "strength": -1},
     {"method": "noise", "size": 3}, "noise"],
)  # fmt: skip
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="defect_feature_augment"):
        augment_defect_features(rows(), bad)


def test_dual_model_grows_its_defect_bank_deterministically(tiny_normal, tiny_crops):
    plain = DualPatchCore(**tiny_params(defect_coreset=1.0)).fit(tiny_normal, tiny_crops)
    settings = {"method": "toward_normal", "n": 40}
    fits = [
        DualPatchCore(**tiny_params(defect_coreset=1.0, defect_feature_augment=settings)).fit(
            tiny_normal, tiny_crops
        )
        for _ in range(2)
    ]
    real = plain.defect_memory_.bank_.shape[0]
    assert fits[0].defect_memory_.bank_.shape[0] == real + 40
    assert torch.equal(fits[0].defect_memory_.bank_, fits[1].defect_memory_.bank_)
    assert fits[0].get_params()["defect_feature_augment"] == settings
    with pytest.raises(ConfigError, match="defect_feature_augment"):
        DualPatchCore(**tiny_params(defect_feature_augment={"method": "x"})).fit(
            tiny_normal, tiny_crops
        )


def test_saved_model_keeps_the_setting(tiny_normal, tiny_crops, tmp_path):
    settings = {"method": "noise", "n": 10, "strength": 0.3}
    model = DualPatchCore(**tiny_params(defect_feature_augment=settings))
    model.fit(tiny_normal, tiny_crops).save(tmp_path / "m")
    assert DualPatchCore.load(tmp_path / "m").defect_feature_augment == settings
