"""The run spec: one vocabulary (estimator parameter = YAML key = --set key = CLI option), values
checked with one-line messages, old names accepted with one warning each."""

from __future__ import annotations

import inspect
import warnings

import pytest

from dualpatch import spec
from dualpatch.errors import ConfigError


def _estimator_params() -> set[str]:
    from dualpatch import DualPatchCore, PatchCore

    names = set(inspect.signature(PatchCore.__init__).parameters)
    return names | set(inspect.signature(DualPatchCore.__init__).parameters)


def test_model_fields_are_the_estimators_parameters_with_their_defaults():
    from dualpatch import DualPatchCore, PatchCore

    assert set(spec.MODEL_KEYS) <= _estimator_params()
    assert "cache_dir" in _estimator_params()  # the one experiment-wide estimator parameter
    model = spec.ModelSpec()
    for cls in (PatchCore, DualPatchCore):
        params = inspect.signature(cls.__init__).parameters
        for name in spec.MODEL_KEYS:
            if name in params:  # DualPatchCore passes most through **kwargs
                assert getattr(model, name) == params[name].default, (cls.__name__, name)


def test_estimator_kwargs_build_both_estimators():
    from dualpatch import DualPatchCore, PatchCore

    settings = {**spec.defaults(), "coreset_ratio": 0.5, "rule": "seed", "image_size": [64, 32]}
    run = spec.RunSpec.of(settings)  # a config's values: the size as YAML lists it
    single = PatchCore(**run.estimator_kwargs("single"))
    dual = DualPatchCore(**run.estimator_kwargs())
    assert single.coreset_ratio == dual.coreset_ratio == 0.5 and dual.rule == "seed"
    assert single.image_size == dual.image_size == (64, 32)  # (H, W), a tuple
    assert not hasattr(single, "rule")
    assert "defect_coreset" not in run.estimator_kwargs("single")


def test_a_spec_keeps_the_size_a_tuple_and_a_config_a_list():
    """One type per place: (H, W) tuples in specs and estimators, [H, W] lists in YAML."""
    assert spec.ModelSpec().image_size == (320, 128)
    assert spec.RunSpec.of({"image_size": [64, 32], "not_a_field": 1}).image_size == (64, 32)
    assert spec.defaults()["image_size"] == [320, 128]


def test_every_registry_name_is_a_choice():
    from dualpatch.augment import METHODS
    from dualpatch.data import DATASETS
    from dualpatch.features.backbones import BACKBONE_NAMES, NORMALIZATIONS
    from dualpatch.scoring import DUAL_RULES

    expected = {
        "dataset": tuple(DATASETS),
        "backbone": BACKBONE_NAMES,
        "rule": tuple(DUAL_RULES),
        "normalization": ("auto", *NORMALIZATIONS),
    }
    for key, names in expected.items():
        assert tuple(spec.SETTINGS[key].choices()) == names
        assert spec.SETTINGS[key].expect() == "one of " + ", ".join(names)
    assert spec.augment_methods() == METHODS


def test_a_new_registry_entry_is_accepted_everywhere(monkeypatch):
    """One edit in the registry (here: a new rule) and the config accepts it."""
    from dualpatch import scoring

    monkeypatch.setitem(scoring.DUAL_RULES, "brand_new", scoring.DUAL_RULES["patch"])
    spec.check_value("", "rule", "brand_new")
    with pytest.raises(ConfigError, match="brand_new"):
        spec.check_value("", "rule", "ratio")


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("coreset_ratio", 2, "config: coreset_ratio is 2; expected a fraction from 0 to 1"),
        ("normal_coreset", 2, "config: normal_coreset is 2; expected a fraction from 0 to 1"),
        ("coreset_min", 0, "config: coreset_min is 0; expected a whole number of at least 1"),
        ("image_size", "abc", "config: image_size is 'abc'; expected [H, W] with both at least 16"),
        ("image_size", [4, 4], "config: image_size is [4, 4]; expected [H, W] with both at least"),
        ("backbone", "vgg", "config: backbone is 'vgg'; expected one of efficientnet_lite0, "),
        ("seed", -1, "config: seed is -1; expected a whole number 0 to 9223372036854775807"),
        ("cache_dir", 5, "config: cache_dir is 5; expected a folder path, or empty for none"),
        ("cache", 5, "config: cache is 5; expected a folder path, or empty for none"),
        ("data", None, "config: data is None; expected a dataset folder path"),
    ],
)
def test_bad_values_are_one_line_naming_the_key_as_written(key, value, message):
    with pytest.raises(ConfigError) as err:
        spec.check_value("", key, value)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_run_messages_say_which_run():
    with pytest.raises(ConfigError, match=r"^config: runs\[2\]\.rule is 'ratio'; expected one of"):
        spec.check_value("runs[2].", "rule", "ratio")
    with pytest.raises(ConfigError, match=r"runs\[0\]\.augment\.n is -5; expected a whole number"):
        spec.check_value("runs[0].", "augment", {"method": "paste", "n": -5})


def test_good_values_pass():
    for key, value in spec.defaults().items():
        spec.check_value("", key, value)
    spec.check_value("", "train_items", "1-33")
    spec.check_value("", "max_memory", "2GiB")
    spec.check_value("", "image_size", (128, 64))


def test_old_keys_are_renamed_with_one_warning_each():
    mapping = {"normal_coreset": 0.5, "seed": 1, "cache": ""}
    run = {"normal_coreset": 0.2}
    with pytest.warns(FutureWarning) as caught:
        pairs = spec.check_values("", mapping) + spec.check_values("runs[0].", run)
        spec.warn_renamed(pairs)
    assert run == {"coreset_ratio": 0.2}
    assert mapping == {"coreset_ratio": 0.5, "seed": 1, "cache_dir": ""}
    assert list(mapping) == ["coreset_ratio", "seed", "cache_dir"]  # order kept
    lines = [str(w.message) for w in caught]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert "normal_coreset is renamed coreset_ratio" in lines[0]
    assert "cache is renamed cache_dir" in lines[1]


def test_new_keys_raise_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spec.check_values("", {"coreset_ratio": 0.5, "cache_dir": None}) == []


def test_both_names_of_one_setting_are_refused():
    with pytest.raises(ConfigError, match="normal_coreset and coreset_ratio are one setting"):
        spec.canonical_keys({"normal_coreset": 0.1, "coreset_ratio": 0.2}, "")


def test_aliases_and_flags_map_to_fields():
    assert spec.ALIASES == {"normal_coreset": "coreset_ratio", "cache": "cache_dir",
                            "good_dir": "good", "defective_dir": "defective",
                            "mask_dir": "masks"}  # fmt: skip
    assert spec.FLAG_ALIASES == {
        "--size": "--image-size", "--coreset": "--coreset-ratio", "--cache": "--cache-dir",
        "--good-dir": "--good", "--defective-dir": "--defective", "--mask-dir": "--masks",
    }  # fmt: skip
    assert set(spec.ALIASES.values()) <= set(spec.SETTINGS)
    assert spec.option_name("coreset_ratio") == "--coreset-ratio"


def test_keys_by_scope():
    top = set(spec.TOP_KEYS)
    assert {"bank", "augment", "augmented"}.isdisjoint(top)  # per run only
    assert {"dataset", "data", "out", "folds", "runs", "cache_dir"}.isdisjoint(spec.RUN_KEYS)
    assert set(spec.MODEL_KEYS) <= top & spec.RUN_KEYS
    assert spec.TOP_KEYS[0] == "name" and spec.TOP_KEYS[-1] == "runs"
    assert list(spec.defaults()) == list(spec.TOP_KEYS)


def test_defaults_are_fresh_copies():
    a, b = spec.defaults(), spec.defaults()
    a["runs"].append({"bank": "dual"})
    a["image_size"][0] = 1
    assert len(b["runs"]) == 2 and b["image_size"] == [320, 128]


def test_the_settings_page_names_every_setting_and_every_old_name():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[3] / "docs" / "options.md").read_text()
    for name in spec.SETTINGS:
        assert f"`{name}`" in page, name
    for old in [*spec.ALIASES, *spec.FLAG_ALIASES]:
        assert old in page, old
