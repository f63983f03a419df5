"""One threshold from fit to verdict: held-out normals set it (and, for a dual model, the novelty
level tau); under the guarded rule it is min(t, tau), so every image the normal bank alone calls
novel at tau is flagged; it is saved, loaded and recorded with what it rests on."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest

from dualpatch import DualPatchCore, PatchCore
from dualpatch.threshold import (
    FEW_HELD_OUT,
    calibrate,
    describe,
    expected_false_reject_rate,
    holdout_split,
)
from tests.support.common import tiny_params


@pytest.fixture(scope="module")
def split(demo_train):
    return holdout_split(demo_train.normal()[:16], 0.25, seed=0)


@pytest.fixture(scope="module")
def calibrated_dual(split, tiny_crops):
    bank, held = split
    model = DualPatchCore(**tiny_params()).fit(bank, tiny_crops)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 4 held-out images: the few-images warning
        calibrate(model, held)
    return model


def test_fit_measures_tau_without_labels(fitted_dual):
    assert fitted_dual.novelty_level_ > 0
    record = fitted_dual.novelty_level_record_
    assert record["method"] == "leave-image-out" and record["images"] == 6
    assert fitted_dual.threshold_ is None  # library fit: no held-out images, no threshold


def test_held_out_normals_set_tau_and_a_capped_threshold(calibrated_dual, split):
    model, (_, held) = calibrated_dual, split
    assert model.novelty_level_record_ == {"method": "held-out", "images": 4, "quantile": 1.0}
    largest = model.bank_distances(held)["normal"].flatten(1).amax(1).numpy()
    assert model.novelty_level_ == pytest.approx(largest.max())
    record = model.threshold_record_
    assert record["images"] == 4 and record["quantile"] == 1.0
    assert record["target_false_reject_rate"] == 0.0
    assert record["expected_false_reject_rate"] == pytest.approx(1 / 5)  # 1 in n + 1, n = 4
    assert "about 20.0% of new normal images like them" in describe(record)
    # the verdict guarantee: the stored threshold is min(score quantile, tau)
    assert model.threshold_ == pytest.approx(min(record["score_quantile"], model.novelty_level_))
    assert record["capped"] == (model.novelty_level_ < record["score_quantile"])
    # the guarded score is at least g(max d_n) with g(tau) = tau: t >= tau, so the threshold is tau
    assert record["score_quantile"] >= model.novelty_level_ * (1 - 1e-6)
    assert model.threshold_ == pytest.approx(model.novelty_level_)
    assert ("capped at the novelty level" in describe(record)) == record["capped"]


def test_every_image_the_normal_bank_calls_novel_is_flagged(calibrated_dual, demo_test):
    model = calibrated_dual
    images = demo_test.normal()[:6] + demo_test.defective()[:6]
    single = model.bank_distances(images)["normal"].flatten(1).amax(1).numpy()
    dual = model.predict(images).image_scores
    novel = single > model.novelty_level_
    assert novel.any()  # the check below is not empty
    assert np.all(dual[novel] >= single[novel] * (1 - 1e-6))
    assert np.all(dual[novel] > model.threshold_)


def test_unsafe_rules_are_not_capped(calibrated_dual, split):
    model = copy.copy(calibrated_dual)
    model.rule = "patch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        threshold = calibrate(model, split[1])
    assert "capped" not in model.threshold_record_
    assert threshold == pytest.approx(model.threshold_record_["score_quantile"])
    assert threshold == pytest.approx(model.predict(split[1]).image_scores.max())


def test_single_bank_threshold_is_its_held_out_quantile(split):
    bank, held = split
    model = PatchCore(**tiny_params()).fit(bank)
    with pytest.warns(UserWarning, match=f"4 held-out normal images .*fewer than {FEW_HELD_OUT}"):
        threshold = calibrate(model, held, quantile=0.5)
    scores = model.predict(held).image_scores
    # an observed score (the next higher order statistic), never an interpolation
    assert threshold == pytest.approx(np.sort(scores)[2]) and threshold in scores
    assert model.threshold_record_["target_false_reject_rate"] == pytest.approx(0.5)
    # the 3rd smallest of 4: a new image like them is above it with probability 2 / 5
    assert model.threshold_record_["expected_false_reject_rate"] == pytest.approx(2 / 5)
    assert not hasattr(model, "novelty_level_")


def test_saved_and_loaded(calibrated_dual, tmp_path, tiny_test):
    calibrated_dual.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["threshold"] == pytest.approx(calibrated_dual.threshold_)
    assert meta["threshold_record"]["capped"] == calibrated_dual.threshold_record_["capped"]
    assert meta["novelty_level"] == pytest.approx(calibrated_dual.novelty_level_)
    assert meta["novelty_level_record"]["method"] == "held-out"
    assert "held out of the bank" in meta["threshold_rule"]
    loaded = DualPatchCore.load(tmp_path / "m")
    assert loaded.threshold_ == pytest.approx(calibrated_dual.threshold_)
    assert loaded.novelty_level_ == pytest.approx(calibrated_dual.novelty_level_)
    np.testing.assert_allclose(
        loaded.predict(tiny_test).image_scores,
        calibrated_dual.predict(tiny_test).image_scores,
        rtol=1e-6,
    )


def test_a_model_without_threshold_loads_with_none(fitted_single, tmp_path):
    fitted_single.save(tmp_path / "m")
    assert PatchCore.load(tmp_path / "m").threshold_ is None


@pytest.mark.parametrize("level", [None, 0, -2.0, "high", True])
def test_guarded_model_file_without_a_usable_level_is_refused(fitted_dual, tmp_path, level):
    from dualpatch.errors import ModelFileError

    fitted_dual.save(tmp_path / "m")
    path = tmp_path / "m" / "model.json"
    meta = json.loads(path.read_text())
    meta.pop("novelty_level") if level is None else meta.update(novelty_level=level)
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"model\.json: .*novelty_level"):
        DualPatchCore.load(tmp_path / "m")


@pytest.mark.parametrize(("images", "quantile"), [(10, 1.0), (47, 1.0), (20, 0.95), (9, 0.5)])
def test_the_expected_false_reject_rate_is_what_new_images_like_the_held_out_ones_meet(
    images, quantile
):
    # the threshold is an observed score of n held-out normals; a new normal image drawn from the
    # same distribution lies above it with probability (n - k + 1) / (n + 1): simulated here
    rng = np.random.default_rng(0)
    trials = 40_000
    held = rng.normal(size=(trials, images))
    thresholds = np.quantile(held, quantile, axis=1, method="higher")
    observed = float(np.mean(rng.normal(size=trials) > thresholds))
    expected = expected_false_reject_rate(images, quantile)
    assert observed == pytest.approx(expected, abs=4 * np.sqrt(expected / trials))
    if quantile == 1.0:  # not the held-out images' own rate, 1 - quantile = 0
        assert expected == pytest.approx(1 / (images + 1)) and expected > 0


def test_an_old_record_without_the_expected_rate_still_reads():
    record = {"quantile": 1.0, "target_false_reject_rate": 0.0, "images": 30, "seed": 0}
    assert describe(record).endswith("target false-reject rate 0%)")
