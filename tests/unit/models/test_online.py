"""Learning on the line (models/online.py): additions to the banks without a refit, the bound on
their size, the guard that keeps defects out of the normal bank, the threshold re-check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dualpatch import PatchCore
from dualpatch.errors import ConfigError, DataError
from dualpatch.models.online import GUARD_FACTOR
from dualpatch.threshold import calibrate
from tests.support.common import tiny_params

from .online_support import fresh, held_out, painted, save_dual


@pytest.fixture(scope="module")
def saved(demo_train, tmp_path_factory):
    return save_dual(demo_train, tmp_path_factory.mktemp("online") / "model")


@pytest.fixture(scope="module")
def defect_image(demo_train, tmp_path_factory):
    return painted(demo_train.normal()[20], tmp_path_factory.mktemp("painted"))


def score(model, path) -> float:
    from dualpatch.models.online import as_samples

    return float(model.predict(as_samples([path], 0)).image_scores[0])


def test_add_normal_keeps_old_rows_and_stays_within_its_bound(saved, demo_test):
    model = fresh(saved)
    old = model.memory_.bank_.clone()
    images = [s.image_path for s in demo_test.normal()[:3]]
    update = model.add_normal(images)
    patches = sum(a["patches"] for a in update.added)
    assert update.rows_before == old.shape[0]
    assert 0 < update.rows_after - update.rows_before <= math.ceil(model.coreset_ratio * patches)
    assert torch.equal(model.memory_.bank_[: old.shape[0]], old)  # nothing replaced
    assert update.rows_after == model.memory_.bank_.shape[0]
    assert [a["sha256"] for a in update.added] and all(len(a["sha256"]) == 64 for a in update.added)


def test_a_false_alarm_added_to_the_normal_bank_scores_lower(tiny_normal, demo_test):
    model = PatchCore(**tiny_params()).fit(tiny_normal)
    image = demo_test.normal()[5].image_path
    before = score(model, image)
    model.add_normal([image])
    assert score(model, image) < before  # its farthest patch is now in the bank


def test_additions_are_deterministic(saved, demo_test):
    images = [s.image_path for s in demo_test.normal()[:2]]
    a, b = fresh(saved), fresh(saved)
    a.add_normal(images)
    b.add_normal(images)
    assert torch.equal(a.memory_.bank_, b.memory_.bank_)


def test_guard_refuses_a_defect_from_the_normal_bank(saved, defect_image):
    model = fresh(saved)
    rows = model.memory_.bank_.shape[0]
    with pytest.raises(DataError, match=rf"refused from the normal bank.*{defect_image.name}"):
        model.add_normal([defect_image])
    assert model.memory_.bank_.shape[0] == rows  # nothing changed
    update = model.add_normal([defect_image], force=True)
    assert update.added[0]["forced"] and update.rows_after > rows


def test_guard_refuses_by_score_alone(saved, demo_test):
    model = fresh(saved)
    image = demo_test.normal()[0].image_path
    model.threshold_ = score(model, image) / (GUARD_FACTOR + 0.1)  # as if this image were far above
    with pytest.raises(DataError, match=r"refused.* scores [0-9.]+ \(limit"):
        model.add_normal([image])


def test_guard_without_a_threshold_uses_the_novelty_level(saved, defect_image, demo_test):
    model = fresh(saved)
    del model.threshold_
    with pytest.raises(DataError, match="refused.*novelty level"):
        model.add_normal([defect_image])
    model.add_normal([demo_test.normal()[0].image_path])  # a good image still goes in


def test_add_defects_with_a_mask_raises_that_image(saved, demo_test):
    model = fresh(saved)
    sample = demo_test.defective()[2]
    before = score(model, sample.image_path)
    update = model.add_defects([sample.image_path], masks=[sample.mask_path])
    assert update.added[0]["chosen_by"] == "mask" and update.added[0]["mask_sha256"]
    assert update.rows_after > update.rows_before
    n = update.added[0]["patches"]
    floor = model.defect_memory_.min_size - update.rows_before  # a bank below its floor keeps all
    assert update.rows_after - update.rows_before <= max(
        math.ceil(model.defect_coreset * n), min(n, floor)
    )
    assert score(model, sample.image_path) > before


def test_add_defects_without_a_mask_takes_the_novel_patches(saved, defect_image):
    model = fresh(saved)
    update = model.add_defects([defect_image])
    added = update.added[0]
    assert added["chosen_by"] == "above novelty level" and added["patches"] > 0
    assert update.novelty_level["level"] > 0 and update.novelty_level["source"]


def test_a_single_bank_model_has_no_defect_bank(fitted_single, defect_image):
    with pytest.raises(ConfigError, match="no defect bank"):
        fitted_single.add_defects([defect_image])


def test_missing_image_is_named(saved, tmp_path):
    with pytest.raises(DataError, match="nothere.png"):
        fresh(saved).add_normal([tmp_path / "nothere.png"])


def test_threshold_is_rechecked_on_held_out_normals(saved, demo_train, demo_test):
    model = fresh(saved)
    sample = demo_test.defective()[2]
    held = held_out(demo_train)
    check = model.add_defects([sample.image_path], [sample.mask_path], held_out=held).threshold
    assert check["checked"] and model.threshold_ == check["after"]
    # the rule fit used, on the changed banks: no held-out normal image scores above it
    assert check["after"] >= float(np.max(model.predict(held).image_scores)) or (
        check["after"] == pytest.approx(model.novelty_level_)  # the guarded rule's cap
    )
    model.threshold_ = None
    assert calibrate(model, held) == pytest.approx(check["after"])  # the same rule, again
    assert check["moved"] == (check["before"] != pytest.approx(check["after"]))


def test_without_held_out_normals_the_threshold_is_kept_and_says_so(saved, demo_test):
    model = fresh(saved)
    before = model.threshold_
    check = model.add_normal([demo_test.normal()[1].image_path]).threshold
    assert not check["checked"] and "not re-checked" in check["reason"]
    assert model.threshold_ == before


def test_guard_refuses_an_image_nearer_a_known_defect(saved, demo_train, demo_test):
    model = fresh(saved)
    sample = demo_test.defective()[2]
    assert sample.image_path.name == "10104.png"
    model.add_normal([sample.image_path])  # not refused before its defect is known...
    model = fresh(saved)
    model.add_defects([sample.image_path], masks=[sample.mask_path])
    del model.threshold_  # the score rule aside: the defect bank's condition alone
    reason = r"10104.png has \d+ patch\(es\) nearer a known defect than normal surface \(limit "
    with pytest.raises(DataError, match=reason + "0"):
        model.add_normal([sample.image_path])  # ...refused once it is
    # the limit from held-out normal images (training data) still refuses it
    with pytest.raises(DataError, match=reason + r"\d+\)"):
        model.add_normal([sample.image_path], held_out=held_out(demo_train))


def test_growth_stops_at_the_ratio_once_the_bank_is_past_its_floor(saved, demo_test):
    model = fresh(saved)
    model.defect_memory_.min_size = 0  # past its floor: the ratio alone bounds the growth
    sample = demo_test.defective()[2]
    update = model.add_defects([sample.image_path], masks=[sample.mask_path])
    n = update.added[0]["patches"]
    assert update.rows_after - update.rows_before == math.ceil(model.defect_coreset * n)


def test_a_single_bank_model_starts_a_defect_bank(tiny_normal, demo_train, demo_test):
    from dualpatch import DualPatchCore
    from dualpatch.models.online import start_defect_bank

    single = PatchCore(**tiny_params()).fit(tiny_normal)
    calibrate(single, held_out(demo_train))
    sample = demo_test.defective()[2]
    dual, update = start_defect_bank(single, [sample.image_path], [sample.mask_path])
    assert isinstance(dual, DualPatchCore) and dual.memory_ is single.memory_
    assert not hasattr(dual, "threshold_")  # single-bank units: dropped without held-out normals
    assert "dropped" in update.threshold["reason"]
    assert 0 < dual.defect_memory_.bank_.shape[0] <= 1 + update.added[0]["patches"]
    dual, update = start_defect_bank(single, [sample.image_path], [sample.mask_path],
                                     held_out=held_out(demo_train))  # fmt: skip
    assert update.threshold["checked"] and dual.novelty_level_ > 0
    found = dual.threshold_
    dual.threshold_ = None
    assert calibrate(dual, held_out(demo_train)) == pytest.approx(found)  # fit's rule, on dual
    with pytest.raises(ConfigError, match="already has a defect bank"):
        start_defect_bank(dual, [sample.image_path], [sample.mask_path])


def test_each_named_guard_applies_only_its_conditions(saved, demo_train, demo_test):
    from dualpatch.models.online import add_normal, guard_limits

    model = fresh(saved)
    sample = demo_test.defective()[2]
    model.add_defects([sample.image_path], masks=[sample.mask_path])
    del model.threshold_  # the defect bank's condition alone decides for this image
    # a guard without the defect-bank condition lets the known defect in...
    add_normal(model, [sample.image_path], guard_rule="patch")
    model = fresh(saved)
    model.add_defects([sample.image_path], masks=[sample.mask_path])
    with pytest.raises(DataError, match="nearer a known defect"):  # ...the defect-bank one not
        add_normal(model, [sample.image_path], guard_rule="defect_like_only")
    held = held_out(demo_train)
    assert set(guard_limits(model, held_out=held, guard="score_or_patch")) == {
        "guard", "score_above", "patch_above", "novelty_source", "rule"
    }  # fmt: skip
    model.threshold_ = 1.0
    assert guard_limits(model, guard="score")["score_above"] == GUARD_FACTOR
    # "any" ignores the held-out images' count; "held_out" takes it
    assert guard_limits(model, held_out=held, guard="any_defect_like")["defect_like_above"] == 0
    with pytest.raises(ConfigError, match="unknown guard 'nope'"):
        guard_limits(model, guard="nope")


def test_a_single_bank_model_keeps_only_score_and_patch(fitted_single):
    from dualpatch.models.online import guard_limits

    limits = guard_limits(fitted_single, guard="defect_like_only")
    assert limits["rule"].startswith("none") and "defect_like_above" not in limits
