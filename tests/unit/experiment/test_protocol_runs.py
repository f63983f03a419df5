"""The protocol inside runs: synthetic defects from the training items only, and a decision
threshold that never depends on test labels."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

from dualpatch.augment import generate, read_manifest
from dualpatch.data import KolektorSDD
from dualpatch.experiment.config import load_config
from dualpatch.experiment.runner import Experiment
from tests.support.protocol_fixtures import make_folder, make_kolektor_folder


def _item(path: str | Path) -> int:
    return int(re.search(r"kos(\d+)", str(path)).group(1))


@pytest.fixture(scope="module")
def kolektor(tmp_path_factory):
    return make_kolektor_folder(tmp_path_factory.mktemp("kol") / "kolektorsdd", items=8)


def test_augmentation_with_train_items_draws_only_from_them(kolektor, tmp_path):
    train = KolektorSDD(kolektor, "train", [1, 2, 3])
    generate("paste", "kolektorsdd", kolektor, tmp_path / "paste", n=12, train=train,
             progress=False)  # fmt: skip
    rows = read_manifest(tmp_path / "paste")
    assert len(rows) == 12
    sources = {_item(r.source_image) for r in rows} | {_item(r.source_mask) for r in rows}
    assert sources <= {1, 2, 3}
    assert len({_item(r.source_mask) for r in rows}) > 1  # more than one defect was drawn


def test_augmentation_pools_are_kept_apart_per_split(kolektor, tmp_path):
    cfg = load_config(None, ["dataset=kolektorsdd", f"data={kolektor}", f"out={tmp_path / 'x'}"])
    exp = Experiment(cfg)
    spec = {"method": "paste", "n": 4}
    a = exp.augment(spec, KolektorSDD(kolektor, "train", [1, 2, 3, 4]))
    b = exp.augment(spec, KolektorSDD(kolektor, "train", [5, 6, 7, 8]))
    assert a != b
    assert {_item(r.source_mask) for r in read_manifest(a)} <= {1, 2, 3, 4}
    assert {_item(r.source_mask) for r in read_manifest(b)} <= {5, 6, 7, 8}
    assert exp.augment(spec, KolektorSDD(kolektor, "train", [1, 2, 3, 4])) == a  # reused


def _run(root: Path, out: Path) -> dict:
    cfg = load_config(
        None,
        [f"data={root}", f"out={out}", "dataset=folder", "image_size=[64, 32]", "coreset_min=20",
         "bootstrap=20", "runs=[{name: single, bank: single}]"],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Experiment(cfg).run()
    return json.loads((out / "metrics.json").read_text())["single"]


def test_threshold_does_not_move_when_test_labels_change(tmp_path):
    root = make_folder(tmp_path / "a", n_good=10, n_bad_train=4)
    first = _run(root, tmp_path / "run-a")
    # relabel the test split: a defective test image becomes "good" and a good one "defective"
    other = tmp_path / "b"
    shutil.copytree(root, other)
    shutil.move(other / "test/crack/test100.png", other / "test/good/test100.png")
    shutil.move(other / "test/good/test000.png", other / "test/crack/test000.png")
    shutil.move(
        other / "ground_truth/crack/test100_mask.png", other / "ground_truth/crack/test000_mask.png"
    )
    second = _run(other, tmp_path / "run-b")
    assert second["threshold"] == first["threshold"]
    assert "validation" in first["threshold_rule"]
    assert "applied unchanged to the model fitted on all" in first["threshold_rule"]
    # the test labels did change what is measured on the test set
    assert second["image_auroc"] != first["image_auroc"]


def test_run_with_folds_and_seeds_reports_spread_intervals_and_verdicts(tmp_path, run_cli):
    root = make_folder(tmp_path / "data", n_good=10, n_bad_train=4, n_test_good=6, n_test_bad=4)
    out = tmp_path / "cv"
    r = run_cli(
        "run", "--set", "dataset=folder", "--set", f"data={root}", "--set", f"out={out}",
        "--set", "image_size=[64, 32]", "--set", "coreset_min=20", "--set", "bootstrap=50",
        "--set", "runs=[{name: single, bank: single}, {name: dual, bank: dual},"
        " {name: single-rw, bank: single, reweight: true}]",
        "--folds", "2", "--seeds", "0,1", timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("single", "dual"):
        m = metrics[name]
        assert m["n_evaluations"] == 4  # 2 folds x 2 seeds
        lo, hi = m["image_auroc_ci"]
        assert lo <= hi and m["image_auroc_std"] >= 0
        folds = sorted(p.name for p in (out / "runs" / name).iterdir() if (p / "run.json").exists())
        assert folds == ["fold0-seed0", "fold0-seed1", "fold1-seed0", "fold1-seed1"]
        points = [json.loads((out / "runs" / name / f / "metrics.json").read_text()) for f in folds]
        assert abs(m["image_auroc"] - sum(p["image_auroc"] for p in points) / 4) < 1e-12
    verdict = metrics["dual"]["comparisons"]["image_auroc"]
    assert verdict["against"] == "single"
    # the one verdict that the reported interval of the difference (dual - single) allows
    lo, hi = verdict["ci"]
    assert lo <= verdict["difference"] <= hi
    right = "dual wins" if lo > 0 else "single wins" if hi < 0 else "within noise"
    assert verdict["verdict"] == right
    # the single bank both ways: dual is also read against the stronger of the two
    singles = metrics["dual"]["against_singles"]
    assert set(singles["against_each"]) == {"single", "single-rw"}
    means = {n: metrics[n]["image_auroc"] for n in ("single", "single-rw")}
    assert singles["strongest_single"]["image_auroc"] == max(means, key=means.get)
    assert singles["against_each"]["single"]["image_auroc"] == verdict
    assert "against_singles" not in metrics["single-rw"]
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"image_auroc_std", "image_auroc_ci_low", "image_auroc_ci_high"} <= set(header)
    page = (out / "report.html").read_text()
    assert "±" in page and verdict["verdict"] in page
    info = json.loads((out / "dataset.json").read_text())
    tested = sorted(i for f in info["folds"] for i in f["test_ids"])
    assert tested == sorted(e["id"] for e in info["files"])  # every image tested exactly once


def test_a_pool_made_by_an_older_recipe_is_not_reused(kolektor, tmp_path, monkeypatch):
    # an experiment folder rerun after a generator's fix must not score the old fix's images
    from dualpatch import augment

    cfg = load_config(None, ["dataset=kolektorsdd", f"data={kolektor}", f"out={tmp_path / 'x'}"])
    exp, spec = Experiment(cfg), {"method": "paste", "n": 2}
    train = KolektorSDD(kolektor, "train", [1, 2, 3, 4])
    old = exp.augment(spec, train)
    monkeypatch.setitem(augment.RECIPES, "paste", augment.RECIPES["paste"] + 1)
    new = exp.augment(spec, train)
    assert new != old and (new / "manifest.csv").exists()
    assert exp.augment(spec, train) == new  # the same recipe still reuses its pool


def test_a_finished_run_on_an_older_recipes_images_is_run_again(monkeypatch):
    # a finished run is skipped by its signature; a generator fix must make the runs built on
    # its images stale, and only those
    from dualpatch import augment
    from dualpatch.experiment.outputs import run_signature

    info = {"train": {"sha256": "a"}, "test": {"sha256": "b"}}
    paste = {"name": "dual+paste", "bank": "dual", "augment": {"method": "paste", "n": 4}}
    plain = {"name": "dual", "bank": "dual", "augment": None}
    before = run_signature(paste, info, "none"), run_signature(plain, info, "none")
    monkeypatch.setitem(augment.RECIPES, "paste", augment.RECIPES["paste"] + 1)
    assert run_signature(paste, info, "none") != before[0]
    assert run_signature(plain, info, "none") == before[1]
