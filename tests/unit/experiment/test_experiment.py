"""The experiment runner: results folder layout, provenance, skipping finished runs, overrides."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import yaml

from dualpatch.errors import ConfigError
from dualpatch.experiment.config import load_config
from dualpatch.experiment.runner import Experiment
from dualpatch.metrics.evaluation import evaluate
from tests.support.common import REPO_ROOT


def _config(tmp_path, demo_root, **extra):
    overrides = [
        "dataset=demo",
        f"data={demo_root}",
        f"out={tmp_path / 'exp'}",
        "image_size=[64, 32]",
        "coreset_min=40",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    cfg = load_config(None, overrides)
    cfg["runs"] = [
        {"name": "single", "bank": "single"},
        {"name": "dual", "bank": "dual"},
        {"name": "dual-seed-rule", "bank": "dual", "rule": "seed", "defects": "crop"},
    ]
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def finished(tmp_path_factory, demo_root):
    tmp = tmp_path_factory.mktemp("experiment")
    cfg = _config(tmp, demo_root)
    report = Experiment(cfg).run()
    return cfg, report


def test_results_folder_holds_everything(finished, demo_test):
    cfg, report = finished
    out = report.parent
    for name in (
        "config.yaml",
        "environment.json",
        "dataset.json",
        "metrics.json",
        "metrics.csv",
        "results.npy",
        "report.html",
        "curves/roc.png",
        "curves/pr.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"single", "dual", "dual-seed-rule"}
    for run in ("single", "dual", "dual-seed-rule"):
        m = metrics[run]
        assert m["fit_seconds"] > 0 and m["images_per_second"] > 0 and m["peak_rss_mb"] > 0
        rows = list(csv.DictReader((out / "runs" / run / "scores.csv").open()))
        assert len(rows) == len(demo_test)
        # the image metrics follow from scores.csv (written at full precision) alone
        labels = np.array([int(row["label"]) for row in rows])
        again = evaluate(labels, np.array([float(row["score"]) for row in rows]))
        for key in ("image_auroc", "image_ap", "f1_max", "f1_threshold"):
            assert again[key] == m[key], (run, key)
        overlays = list((out / "runs" / run / "overlays").glob("*.png"))
        assert len(overlays) == len(demo_test)  # every test image, not only a gallery sample
    table = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["run"] for r in table} == set(metrics)


def test_provenance(finished, demo_train, demo_test):
    cfg, report = finished
    out = report.parent
    assert yaml.safe_load((out / "config.yaml").read_text())["runs"] == cfg["runs"]
    env = json.loads((out / "environment.json").read_text())
    assert "torch" in env["versions"] and env["torch_threads"] >= 1
    data = json.loads((out / "dataset.json").read_text())
    assert data["train"]["sha256"] == demo_train.fingerprint()
    assert len(data["test"]["files"]) == len(demo_test)


def test_results_npy_keeps_the_reference_layout(finished):
    _, report = finished
    results = np.load(report.parent / "results.npy", allow_pickle=True).item()
    assert set(results["standard_patchcore"]) == {"image_auc", "pixel_auc"}
    assert set(results["dual_patchcore"]) == {"image_auc", "pixel_auc", "rule"}
    from dualpatch.defaults import DUAL_RULE

    assert results["dual_patchcore"]["rule"] == DUAL_RULE
    assert results["dual_patchcore:dual-seed-rule"]["rule"] == "seed"
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert results["standard_patchcore"]["image_auc"] == pytest.approx(
        metrics["single"]["image_auroc"]
    )


def test_rerun_skips_finished_runs_without_feature_extraction(finished, monkeypatch):
    cfg, report = finished
    before = json.loads((report.parent / "metrics.json").read_text())

    def boom(*args, **kwargs):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr("dualpatch.features.extractor.FeatureExtractor.forward", boom)
    Experiment(cfg).run()
    assert json.loads((report.parent / "metrics.json").read_text()) == before


def test_changed_run_is_recomputed_from_cached_features(finished, monkeypatch):
    cfg, report = finished
    cfg = json.loads(json.dumps(cfg))
    cfg["runs"] = [{"name": "single", "bank": "single", "coreset_ratio": 0.5}]
    calls = []
    from dualpatch.features.extractor import FeatureExtractor

    original = FeatureExtractor.forward

    def counting(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(FeatureExtractor, "forward", counting)
    Experiment(cfg).run()
    # the first run embedded every training, validation and test image: the changed run refits
    # and scores from the feature cache alone
    assert sum(calls) == 0
    run = json.loads((report.parent / "runs" / "single" / "run.json").read_text())
    assert run["settings"]["coreset_ratio"] == 0.5


def test_overrides_and_validation(tmp_path):
    cfg = load_config(None, ["seed=7", "runs.0.rule=seed", "image_size=[160, 64]"])
    assert cfg["seed"] == 7 and cfg["runs"][0]["rule"] == "seed" and cfg["image_size"] == [160, 64]
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(None, ["colour=blue"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: demo\nbackbon: resnet50\n")
    with pytest.raises(ConfigError, match="backbon"):
        load_config(bad)
    bad.write_text("runs:\n  - {name: a, bank: triple}\n")
    with pytest.raises(ConfigError, match="triple"):
        load_config(bad)
    bad.write_text("runs:\n  - {name: a, bank: single, augment: {method: paste}}\n")
    with pytest.raises(ConfigError, match="single-bank"):
        load_config(bad)


def test_shipped_configs_are_valid():
    configs = sorted((REPO_ROOT / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = load_config(path)
        assert cfg["runs"]
    ksdd2 = load_config(REPO_ROOT / "configs/ksdd2.yaml")
    assert (ksdd2["backbone"], ksdd2["coreset_ratio"], ksdd2["defect_coreset"], ksdd2["seed"]) == (
        "resnet50",
        0.01,
        0.10,
        42,
    )


OLD_KEYS = """\
dataset: demo
normal_coreset: 0.2
cache: ""
runs:
  - {name: single, bank: single, normal_coreset: 0.3}
  - {name: dual, bank: dual}
"""


def test_a_config_with_the_old_keys_still_loads_with_one_warning_per_old_name(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(OLD_KEYS)
    with pytest.warns(FutureWarning) as caught:
        cfg = load_config(path, ["runs.1.normal_coreset=0.4"])
    assert (cfg["coreset_ratio"], cfg["cache_dir"]) == (0.2, "")
    assert "normal_coreset" not in cfg and "cache" not in cfg
    assert [r.get("coreset_ratio") for r in cfg["runs"]] == [0.3, 0.4]
    lines = sorted(str(w.message) for w in caught)
    assert len(lines) == 2, lines  # normal_coreset (used three times) and cache: once each
    assert "cache is renamed cache_dir" in lines[0]
    assert "normal_coreset is renamed coreset_ratio" in lines[1]
    # the same config under the new names: the same settings, no warning
    new = tmp_path / "new.yaml"
    renamed = OLD_KEYS.replace("normal_coreset", "coreset_ratio")
    new.write_text(renamed.replace("cache:", "cache_dir:"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(new, ["runs.1.coreset_ratio=0.4"]) == cfg


def test_old_key_errors_name_the_old_key_and_both_names_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="^config: normal_coreset is 2; expected a fraction"):
        load_config(None, ["normal_coreset=2"])
    path = tmp_path / "both.yaml"
    path.write_text("normal_coreset: 0.2\ncoreset_ratio: 0.3\n")
    with pytest.raises(ConfigError, match="normal_coreset and coreset_ratio are one setting"):
        load_config(path)


def test_the_validation_fits_synthetic_pool_is_made_from_its_training_part_only(
    tmp_path, monkeypatch
):
    # a pool made from all training images would paste validation defects into the bank whose
    # validation scores set the threshold
    from dualpatch.data import load_dataset
    from dualpatch.experiment.config import resolve_run
    from dualpatch.experiment.protocol import inner_split
    from tests.support.protocol_fixtures import make_folder

    data = make_folder(tmp_path / "data", n_good=8, n_bad_train=6)
    cfg = load_config(
        None,
        ["dataset=folder", f"data={data}", f"out={tmp_path / 'exp'}", "image_size=[64, 32]",
         "coreset_min=20", f"cache_dir={tmp_path / 'cache'}", "threshold=validation",
         "runs=[{name: dual+paste, bank: dual, augment: {method: paste, n: 3}}]"],
    )  # fmt: skip
    exp = Experiment(cfg)
    pools = []
    real_augment = Experiment.augment

    def recording_augment(self, spec, train):
        pools.append({s.id for s in train})
        return real_augment(self, spec, train)

    monkeypatch.setattr(Experiment, "augment", recording_augment)
    train = load_dataset("folder", data, "train")
    settings = resolve_run(cfg, cfg["runs"][0])
    exp.threshold(settings, train)
    inner, validation = inner_split(train, settings["seed"])
    assert pools == [{s.id for s in inner}]
    assert not pools[0] & {s.id for s in validation.defective()}


def test_native_pixel_metrics_are_added_when_asked(tmp_path):
    from tests.support.protocol_fixtures import make_folder

    data = make_folder(tmp_path / "data")
    base = ["dataset=folder", f"data={data}", "image_size=[32, 16]", "coreset_min=20",
            "bootstrap=20", "threshold=none", f"cache_dir={tmp_path / 'cache'}",
            "runs=[{name: single, bank: single}]"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Experiment(load_config(None, [*base, f"out={tmp_path / 'a'}"])).run()
        Experiment(load_config(None, [*base, f"out={tmp_path / 'b'}",
                                      "native_pixel_metrics=true"])).run()  # fmt: skip
    plain = json.loads((tmp_path / "a" / "metrics.json").read_text())["single"]
    native = json.loads((tmp_path / "b" / "metrics.json").read_text())["single"]
    assert "pixel_auroc_native" not in plain
    assert 0 <= native["pixel_auroc_native"] <= 1 and 0 <= native["pixel_aupro_native"] <= 1
    assert native["pixel_auroc"] == plain["pixel_auroc"]  # the model-size figures stay
    assert native["pixel_auroc_native"] != native["pixel_auroc"]
