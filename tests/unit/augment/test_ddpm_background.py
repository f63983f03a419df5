"""The DDPM's background-normalised windows and its no-flip option."""

from __future__ import annotations

import numpy as np
import pytest

from dualpatch.augment.ddpm import sample_ddpm, train_ddpm
from dualpatch.augment.ddpm_model import NORM_FLOOR, NORM_UNIT, denormalise, normalise_window
from dualpatch.augment.ddpm_train import PatchSampler
from dualpatch.augment.manifest import read_manifest
from dualpatch.augment.sources import DefectShape, PlacementPrior
from dualpatch.data import Sample
from tests.support.ddpm import check_outputs, tiny


def test_normalise_window_uses_only_the_known_pixels_and_undoes():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 0.2, size=(8, 6, 1)).astype(np.float32) + 0.3
    known = np.ones((8, 6), bool)
    known[2:5, 2:4] = False
    x[~known] = -0.7  # a dark defect: must not move the statistics
    z, mean, spread = normalise_window(x, known)
    assert mean == pytest.approx(float(x[known].mean()), abs=1e-6)
    assert spread == pytest.approx((float(x[known].std()) + NORM_FLOOR) / NORM_UNIT, rel=1e-6)
    assert abs(float(z[known].mean())) < 1e-5
    assert (z[~known] < z[known].min()).all()  # still darker than all of its surface
    assert np.allclose(denormalise(z, mean, spread), x, atol=1e-5)  # nothing clipped here


def test_flat_surface_is_not_blown_up():
    x = np.full((4, 4, 1), 0.5, np.float32)
    x[1, 1] = 0.52
    z, _, spread = normalise_window(x, np.ones((4, 4), bool))
    assert spread >= NORM_FLOOR / NORM_UNIT and np.abs(z).max() < 0.1


@pytest.mark.parametrize("settings", [{"normalise": True}, {"flip": False}])
def test_options_train_sample_and_keep_outside_pixels(settings, demo_train, tmp_path):
    cfg = tiny(**settings)
    config = train_ddpm(demo_train, tmp_path / "m", steps=1, cfg=cfg, progress=False)
    assert all(config["train"][k] == v for k, v in settings.items())
    for out in ("a", "b"):
        sample_ddpm(tmp_path / "m", demo_train, 2, tmp_path / out, progress=False, sample_steps=2)
    check_outputs(tmp_path / "a", 2)  # outside the mask: the normal image, byte for byte
    same = [
        (tmp_path / d / r.image).read_bytes() for d in "ab" for r in read_manifest(tmp_path / d)
    ]
    assert same[:2] == same[2:]


def test_no_flip_keeps_training_patches_and_placements_unflipped(demo_train):
    cfg = tiny(flip=False)
    sampler = PatchSampler(demo_train, cfg, seed=0, progress=False)
    ramp = (np.arange(600) * 255 // 600).astype(np.uint8)  # brighter to the right
    img = np.tile(ramp[None, :, None], (600, 1, 1))
    for seed in range(8):
        patch, _ = sampler._warp(np.random.default_rng(seed), img, None, 300.0, 300.0)
        row = patch[cfg.patch // 2, :, 0].astype(int)
        assert row[-4] >= row[3]  # brighter to the right, as the image: never mirrored
    shape = DefectShape(np.ones((3, 5), bool), (10, 10, 13, 15), (40, 40),
                        Sample("a", None, None, 1))  # fmt: skip
    prior = PlacementPrior(((0.3, 0.3),), ("a",), 0.0, 255.0)
    image = np.full((40, 40, 1), 100, np.uint8)
    for seed in range(8):
        where, _ = prior.place(np.random.default_rng(seed), shape, image, flip=False)
        assert not where.flip_h and not where.flip_v


def test_models_saved_before_the_flip_setting_keep_their_flips():
    from dualpatch.augment.ddpm import DDPMConfig

    old = DDPMConfig().to_json()
    del old["flip"]  # a config.json written before the setting existed
    assert DDPMConfig.from_json(old).flip is True
    assert DDPMConfig().flip is False
    assert DDPMConfig.from_json(DDPMConfig().to_json()).flip is False
