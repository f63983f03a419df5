"""The model card: every field of model.json checked at load, score-changing fields sealed in the
tensor file, non-finite banks refused at save and at load."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from dualpatch import DualPatchCore, PatchCore
from dualpatch.card import SEAL_KEY, ModelCard, read_safetensors_metadata, seal_of
from dualpatch.errors import DualpatchError, ModelFileError
from tests.support.model_files import as_saved_before_the_seal, edit_card, replace_bank


@pytest.fixture
def saved_dual(fitted_dual, tmp_path) -> Path:
    model = copy.copy(fitted_dual)
    model.threshold_, model.threshold_rule_ = 1.25, "test"
    return model.save(tmp_path / "dual")


def test_card_reads_typed_fields(saved_dual):
    card = ModelCard.read(saved_dual)
    assert card.model_class == "DualPatchCore" and card.kind == "dual"
    assert card.image_size == (64, 32) and isinstance(card.grid, tuple)
    assert card.threshold == 1.25 and card.map_scale and card.map_scale > 0
    assert set(card.tensors) == {"normal_bank", "defect_bank"}  # the check: only once calibrated
    assert all(w == card.feature_dim for _, w in card.tensors.values())
    assert read_safetensors_metadata(card.tensor_path)[SEAL_KEY] == seal_of(card.data)


#: (edit, the key the error names): values no estimator can use
INVALID = {
    "threshold-text": (lambda m: m.update(threshold="high"), "threshold"),
    "threshold-nan": (lambda m: m.update(threshold=math.nan), "threshold"),
    "threshold-inf": (lambda m: m.update(threshold=math.inf), "threshold"),
    "threshold-bool": (lambda m: m.update(threshold=True), "threshold"),
    "eps-text": (lambda m: m["params"].update(eps="tiny"), "eps"),
    "eps-negative": (lambda m: m["params"].update(eps=-1e-6), "eps"),
    "eps-zero": (lambda m: m["params"].update(eps=0), "eps"),
    "k-zero": (lambda m: m["params"].update(num_neighbors=0), "num_neighbors"),
    "k-float": (lambda m: m["params"].update(num_neighbors=1.5), "num_neighbors"),
    "blur-negative": (lambda m: m["params"].update(blur_sigma=-4), "blur_sigma"),
    "coreset-2": (lambda m: m["params"].update(coreset_ratio=2), "coreset_ratio"),
    "rule-number": (lambda m: m["params"].update(rule=3), "rule"),
    "normalization-null": (lambda m: m["params"].update(normalization=None), "normalization"),
    "map-scale-negative": (lambda m: m.update(map_scale=-1.0), "map_scale"),
    "map-scale-text": (lambda m: m.update(map_scale="1"), "map_scale"),
    "novelty-nan": (lambda m: m.update(novelty_level=math.nan), "novelty_level"),
    "feature-dim-text": (lambda m: m.update(feature_dim="152"), "feature_dim"),
    "grid-short": (lambda m: m.update(grid=[8]), "grid"),
    "digest-short": (lambda m: m.update(safetensors_sha256="abc"), "safetensors_sha256"),
    "nan-in-extra": (lambda m: m.update(custom={"x": [1, math.nan]}), "custom.x.1"),
}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_field_is_refused_naming_file_and_key(saved_dual, name):
    change, key = INVALID[name]
    path = edit_card(saved_dual, change)
    for load in (ModelCard.read, PatchCore.load):
        with pytest.raises(ModelFileError) as err:
            load(saved_dual)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and key in message and "\n" not in message


#: edits to values an estimator could use, that change scores or what they mean
SEALED = {
    "image_size": lambda m: m["params"].update(image_size=[96, 32]),
    "rule": lambda m: m["params"].update(
        rule="weighted" if m["params"]["rule"] != "weighted" else "patch"
    ),
    "k": lambda m: m["params"].update(num_neighbors=3),
    "eps": lambda m: m["params"].update(eps=0.5),
    "normalization": lambda m: m["params"].update(normalization="tf"),
    "blur": lambda m: m["params"].update(blur_sigma=1.0),
    "threshold": lambda m: m.update(threshold=0.5),
    "threshold-dropped": lambda m: m.pop("threshold"),
    "map_scale": lambda m: m.update(map_scale=m["map_scale"] * 2),
    "coreset": lambda m: m["params"].update(coreset_ratio=0.5),
    "weights-digest": lambda m: m["backbone_weights"].update(sha256="0" * 64),
    "new-key": lambda m: m.update(novelty_level=2.0),
}


@pytest.mark.parametrize("name", SEALED)
def test_edited_sealed_field_is_refused(saved_dual, name):
    path = edit_card(saved_dual, SEALED[name])
    for load in (ModelCard.read, DualPatchCore.load):
        with pytest.raises(DualpatchError) as err:  # the weights' own check may speak first
            load(saved_dual)
        assert str(err.value).startswith(f"{path}: ")
    with pytest.raises(ModelFileError, match="settings differ"):
        ModelCard.read(saved_dual)


@pytest.mark.parametrize(
    ("key", "value"), [("normalization", "none"), ("rule", "ratio"), ("backbone", "resnet9000")]
)
def test_unknown_names_are_refused_by_the_estimator(saved_dual, key, value):
    path = edit_card(saved_dual, lambda m: m["params"].update({key: value}))
    with pytest.raises(ModelFileError, match=value) as err:
        PatchCore.load(saved_dual)
    assert str(err.value).startswith(f"{path}: ")


def test_unsealed_fields_may_be_edited(saved_dual, fitted_dual, tiny_test):
    """batch_size and max_memory change memory use, not scores; versions, where the weights
    file lives and the provenance records are not settings."""

    def change(m):
        m["params"].update(batch_size=2, max_memory="1GiB")
        m["versions"]["torch"] = "0.0"
        m.update(train_sha256=["0" * 64], defect_crop_files=[], threshold_rule="by hand")

    edit_card(saved_dual, change)
    loaded = DualPatchCore.load(saved_dual)
    assert loaded.batch_size == 2
    loaded.progress = False
    a = loaded.predict(tiny_test[:3]).image_scores
    b = fitted_dual.predict(tiny_test[:3]).image_scores
    assert a.tolist() == pytest.approx(b.tolist(), rel=1e-6)


def test_model_saved_before_the_seal_is_still_validated(saved_dual):
    as_saved_before_the_seal(saved_dual)
    assert SEAL_KEY not in read_safetensors_metadata(saved_dual / "model.safetensors")
    DualPatchCore.load(saved_dual)  # loads: nothing to compare with
    path = edit_card(saved_dual, lambda m: m["params"].update(eps="tiny"))
    with pytest.raises(ModelFileError, match="eps") as err:
        DualPatchCore.load(saved_dual)
    assert str(path) in str(err.value)


# -- banks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_bank_is_refused_at_save(fitted_single, tmp_path, value):
    model = copy.copy(fitted_single)
    model.memory_ = copy.copy(fitted_single.memory_)
    bank = fitted_single.memory_.bank_.clone()
    bank[3, 5] = value
    model.memory_.bank_ = bank
    with pytest.raises(ModelFileError, match="normal_bank holds 1 NaN or infinite"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_non_finite_bank_is_refused_at_load(fitted_single, tmp_path):
    folder = fitted_single.save(tmp_path / "m")
    bank = fitted_single.memory_.bank_.clone()
    bank[0] = math.nan
    replace_bank(folder, bank)
    with pytest.raises(ModelFileError, match="NaN or infinite") as err:
        PatchCore.load(folder)
    assert str(err.value).startswith(f"{folder / 'model.safetensors'}: ")


def test_bank_of_the_wrong_width_is_refused(fitted_single, tmp_path):
    folder = fitted_single.save(tmp_path / "m")
    replace_bank(folder, fitted_single.memory_.bank_[:, :100].clone())
    with pytest.raises(ModelFileError, match="bank width") as err:
        PatchCore.load(folder)
    assert str(err.value).startswith(f"{folder / 'model.safetensors'}: ")


@pytest.mark.parametrize("value", [math.nan, np.float32("inf")], ids=["nan", "numpy-inf"])
def test_non_finite_threshold_is_refused_at_save(fitted_single, tmp_path, value):
    model = copy.copy(fitted_single)
    model.threshold_ = value
    with pytest.raises(ModelFileError, match="threshold is .*expected a finite number"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_numpy_threshold_is_saved_as_a_number(fitted_single, tmp_path):
    model = copy.copy(fitted_single)
    model.threshold_ = np.float32(0.5)
    assert ModelCard.read(model.save(tmp_path / "m")).threshold == 0.5
