"""Estimators: fit/predict contract, save/load round trip, refusal of damaged model files, cache."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from dualpatch import DualPatchCore, PatchCore, Prediction
from dualpatch.data.crops import DefectCrop
from dualpatch.errors import ConfigError, DataError, ModelFileError
from tests.support.common import TINY, CountingExtractor, tiny_params
from tests.support.model_files import edit_card

# -- fit / predict contract ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PatchCore, DualPatchCore])
def test_fit_returns_self_and_learned_attributes_end_in_underscore(cls, tiny_normal, tiny_crops):
    model = cls(**tiny_params(seed=3))
    before = {k for k in vars(model) if not k.startswith("_")}
    assert not [k for k in before if k.endswith("_")], "__init__ must not set learned state"
    assert model.get_params()["seed"] == 3 and model.get_params()["image_size"] == TINY
    args = (tiny_normal[:2], tiny_crops) if cls is DualPatchCore else (tiny_normal[:2],)
    assert model.fit(*args) is model
    learned = {k for k in vars(model) if not k.startswith("_")} - before
    dual_state = {"defect_memory_", "defect_crop_files_"}  # no files here: the list is empty
    dual_state |= {"pseudo_masks_"}  # unmasked defective images taken by pseudo-mask: none here
    dual_state |= {"novelty_level_", "novelty_level_record_"}  # tau, leave-image-out at fit
    # the verdict threshold: None until threshold.calibrate sets it
    expected = {"memory_", "grid_", "map_scale_", "train_sha256_"}
    expected |= {"threshold_", "threshold_record_"}
    # the image-level check (on by default): summaries, level, scale and how they were measured
    expected |= {"gate_summaries_", "gate_level_", "gate_scale_", "gate_record_"}
    expected |= dual_state if cls is DualPatchCore else set()
    assert learned == expected
    assert all(k.endswith("_") for k in learned)
    assert model.threshold_ is None
    assert model.grid_ == (TINY[0] // 8, TINY[1] // 8)
    assert model.memory_.bank_.shape == (40, model.extractor_.dim)
    # parameters are left as given
    assert model.get_params()["seed"] == 3 and model.coreset_min == 40


@pytest.mark.parametrize("which", ["fitted_single", "fitted_dual"])
def test_predict_maps_and_scores(which, request, tiny_test):
    model = request.getfixturevalue(which)
    pred = model.predict(tiny_test)
    assert isinstance(pred, Prediction)
    assert pred.ids == [s.id for s in tiny_test]
    assert pred.anomaly_maps.shape == (len(tiny_test), *TINY)
    assert pred.anomaly_maps.dtype == np.float32
    assert pred.image_scores.shape == (len(tiny_test),)
    assert np.all(np.isfinite(pred.image_scores)) and np.all(np.isfinite(pred.anomaly_maps))
    assert pred.labels.tolist() == [s.label for s in tiny_test] == [0, 0, 0, 1, 1, 1]
    assert np.all(pred.image_scores > 0)
    # the demo defects are blatant: the defective images outscore the good ones on average
    assert pred.image_scores[3:].mean() > pred.image_scores[:3].mean()


def test_single_score_is_max_nearest_neighbour_distance(fitted_single, tiny_test):
    """Image score = the largest distance from a patch to its nearest normal-bank entry."""
    from dualpatch.features.extractor import to_tensor

    images = to_tensor([s.image(TINY) for s in tiny_test[:4]])
    feats = fitted_single.extractor_(images).features  # (B, D, h, w)
    bank = fitted_single.memory_.bank_.double()
    expected = [
        float(torch.cdist(f.flatten(1).T.double(), bank).min(dim=1).values.max()) for f in feats
    ]
    pred = fitted_single.predict(tiny_test[:4])
    np.testing.assert_allclose(pred.image_scores, expected, rtol=1e-4)
    # the map is the blurred, upsampled distance grid: never above the top patch distance
    assert np.all(pred.anomaly_maps.reshape(4, -1).max(1) <= pred.image_scores + 1e-5)


def test_predict_batches_do_not_change_scores(fitted_single, tiny_test):
    whole = fitted_single.predict(tiny_test)
    old = fitted_single.batch_size
    try:
        fitted_single.batch_size = 1
        one_by_one = fitted_single.predict(tiny_test)
    finally:
        fitted_single.batch_size = old
    np.testing.assert_allclose(whole.image_scores, one_by_one.image_scores, rtol=1e-5)


def test_reweighted_scores_are_at_most_plain(fitted_single, tiny_test, tmp_path):
    fitted_single.save(tmp_path / "m")
    plain = PatchCore.load(tmp_path / "m")
    plain.progress = False
    re = PatchCore.load(tmp_path / "m")
    re.progress, re.reweight = False, True
    p, r = plain.predict(tiny_test), re.predict(tiny_test)
    assert np.all(r.image_scores <= p.image_scores + 1e-6)
    assert np.all(r.image_scores > 0)
    np.testing.assert_array_equal(r.anomaly_maps, p.anomaly_maps)


def test_predict_before_fit_and_on_nothing(fitted_single, tiny_test):
    with pytest.raises(ConfigError, match="not fitted"):
        PatchCore(**tiny_params()).predict(tiny_test)
    with pytest.raises(ConfigError, match="not fitted"):
        PatchCore(**tiny_params()).save("never-written")
    with pytest.raises(DataError):
        fitted_single.predict([])
    with pytest.raises(DataError):
        PatchCore(**tiny_params()).fit([])


# -- save / load -----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["fitted_single", "fitted_dual"])
def test_save_load_round_trip(which, request, tiny_test, tmp_path):
    model = request.getfixturevalue(which)
    folder = model.save(tmp_path / "model")
    assert {p.name for p in folder.iterdir()} == {"model.json", "model.safetensors"}
    meta = json.loads((folder / "model.json").read_text())
    assert meta["class"] == type(model).__name__
    loaded = PatchCore.load(folder)  # the base class loads either kind
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    assert loaded.image_size == TINY and loaded.grid_ == model.grid_
    assert torch.equal(loaded.memory_.bank_, model.memory_.bank_)
    if which == "fitted_dual":
        assert torch.equal(loaded.defect_memory_.bank_, model.defect_memory_.bank_)
    loaded.progress = False
    a, b = model.predict(tiny_test), loaded.predict(tiny_test)
    np.testing.assert_array_equal(a.image_scores, b.image_scores)
    np.testing.assert_array_equal(a.anomaly_maps, b.anomaly_maps)


def test_dual_load_refuses_a_single_model(fitted_single, tmp_path):
    fitted_single.save(tmp_path / "m")
    with pytest.raises(ModelFileError, match="not a DualPatchCore") as err:
        DualPatchCore.load(tmp_path / "m")
    assert str(tmp_path / "m" / "model.json") in str(err.value)


@pytest.fixture
def saved_single(fitted_single, tmp_path):
    return fitted_single.save(tmp_path / "model")


def test_flipped_byte_in_safetensors(saved_single):
    path = saved_single / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum") as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value)


def test_truncated_safetensors(saved_single):
    path = saved_single / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFileError) as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_missing_model_file(saved_single, name):
    (saved_single / name).unlink()
    with pytest.raises(ModelFileError, match="not found") as err:
        PatchCore.load(saved_single)
    assert str(saved_single / name) in str(err.value)


def test_format_version_99(saved_single):
    path = edit_card(saved_single, lambda m: m.update(format_version=99))
    with pytest.raises(ModelFileError, match="99") as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("cls_name", ["IsolationForest", "", None])
def test_unknown_model_class(saved_single, cls_name):
    path = edit_card(saved_single, lambda m: m.update({"class": cls_name}))
    with pytest.raises(ModelFileError, match="class") as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value)


def test_single_model_relabelled_as_dual(saved_single):
    """model.json claims DualPatchCore but the tensors hold no defect bank."""
    path = edit_card(saved_single, lambda m: m.update({"class": "DualPatchCore"}))
    with pytest.raises(ModelFileError) as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value) or str(saved_single) in str(err.value)


def test_dual_model_relabelled_as_single(fitted_dual, tmp_path):
    folder = fitted_dual.save(tmp_path / "dual")
    path = edit_card(folder, lambda m: m.update({"class": "PatchCore"}))
    with pytest.raises(ModelFileError) as err:
        PatchCore.load(folder)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '"model"', "\xff\xfe"])
def test_bad_json(saved_single, text):
    path = saved_single / "model.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ModelFileError) as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("key", ["params", "grid", "feature_dim"])
def test_json_missing_a_key(saved_single, key):
    path = edit_card(saved_single, lambda m: m.pop(key))
    with pytest.raises(ModelFileError) as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value)


def test_json_with_unknown_parameter(saved_single):
    path = edit_card(saved_single, lambda m: m["params"].update(temperature=3))
    with pytest.raises(ModelFileError, match="parameters") as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value)


def test_json_feature_dim_of_another_backbone(saved_single):
    path = edit_card(saved_single, lambda m: m.update(feature_dim=1536))
    with pytest.raises(ModelFileError, match="feature size") as err:
        PatchCore.load(saved_single)
    assert str(path) in str(err.value)


def test_json_tensor_shapes_differ(saved_single):
    edit_card(saved_single, lambda m: m["tensors"].update(normal_bank=[7, 152]))
    with pytest.raises(ModelFileError, match="shapes") as err:
        PatchCore.load(saved_single)
    assert str(saved_single / "model.safetensors") in str(err.value)


# -- determinism -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PatchCore, DualPatchCore])
def test_same_seed_same_scores(cls, tiny_normal, tiny_crops, tiny_test):
    def run(seed):
        model = cls(**tiny_params(seed=seed))
        args = (tiny_normal, tiny_crops) if cls is DualPatchCore else (tiny_normal,)
        model.fit(*args)
        return model, model.predict(tiny_test).image_scores

    a, sa = run(5)
    b, sb = run(5)
    assert torch.equal(a.memory_.bank_, b.memory_.bank_)
    np.testing.assert_array_equal(sa, sb)
    c, _ = run(6)  # another seed starts the coreset elsewhere
    assert not torch.equal(a.memory_.bank_, c.memory_.bank_)


# -- dual fit --------------------------------------------------------------------------------------


def crop(h, w, mask_value=True):
    return DefectCrop(
        np.full((h, w, 3), 128, np.uint8), np.full((h, w), mask_value), "synthetic", (0, 0, h, w)
    )


@pytest.mark.parametrize(
    "crops", [[], [crop(32, 32, mask_value=False)], [crop(4, 4), crop(7, 40)]],
    ids=["none", "empty-mask", "too-small"],
)
def test_dual_fit_without_usable_crops(tiny_normal, crops):
    model = DualPatchCore(**tiny_params())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match="defect bank is empty"):
            model.fit(tiny_normal[:1], crops)
    if crops and crops[0].mask.shape[0] < 8:
        assert len([w for w in caught if "smaller than one patch" in str(w.message)]) == 2


def test_dual_defect_patches_mask_keeps_fewer_than_all(tiny_crops):
    mask_model = DualPatchCore(**tiny_params(), defect_patches="mask")
    all_model = DualPatchCore(**tiny_params(), defect_patches="all")
    all_model._extractor = mask_model.extractor_
    n_mask = mask_model.crop_features(tiny_crops).shape[0]
    n_all = all_model.crop_features(tiny_crops).shape[0]
    assert 0 < n_mask < n_all


@pytest.mark.parametrize("bad", [{"rule": "ratio"}, {"defect_patches": "some"}])
def test_dual_bad_options(tiny_normal, tiny_crops, bad):
    with pytest.raises(ConfigError):
        DualPatchCore(**tiny_params(), **bad).fit(tiny_normal[:1], tiny_crops)


def test_dual_seed_rule_predicts(fitted_dual, tiny_test, tmp_path):
    fitted_dual.save(tmp_path / "m")
    model = DualPatchCore.load(tmp_path / "m")
    model.rule, model.progress = "seed", False
    pred = model.predict(tiny_test)
    assert pred.anomaly_maps.shape == (len(tiny_test), *TINY)
    assert np.all(np.isfinite(pred.image_scores)) and np.all(pred.image_scores > 0)


# -- feature cache ---------------------------------------------------------------------------------


def test_feature_cache(tiny_normal, tmp_path):
    cache = tmp_path / "cache"
    first = PatchCore(**tiny_params(cache_dir=str(cache)))
    first._extractor = counting = CountingExtractor(first.extractor_)
    first.fit(tiny_normal)
    assert counting.images == len(tiny_normal)
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == len(tiny_normal)

    second = PatchCore(**tiny_params(cache_dir=str(cache)))
    second._extractor = counting = CountingExtractor(first.extractor_.inner)
    second.fit(tiny_normal)
    assert counting.images == 0  # everything came from the cache
    assert torch.equal(second.memory_.bank_, first.memory_.bank_)

    # a damaged entry is recomputed, not trusted (once the shared normal bank is gone too)
    shutil.rmtree(cache / "banks")
    files[0].write_bytes(b"garbage")
    third = PatchCore(**tiny_params(cache_dir=str(cache)))
    third._extractor = counting = CountingExtractor(first.extractor_.inner)
    third.fit(tiny_normal)
    assert counting.images == 1
    assert torch.equal(third.memory_.bank_, first.memory_.bank_)

    # another input size is another cache entry
    fourth = PatchCore(**{**tiny_params(cache_dir=str(cache)), "image_size": (48, 32)})
    fourth._extractor = counting = CountingExtractor(first.extractor_.inner)
    fourth.fit(tiny_normal[:2])
    assert counting.images == 2
    assert len(list(cache.glob("*.safetensors"))) == len(tiny_normal) + 2
