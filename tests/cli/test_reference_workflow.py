"""The reference scripts' workflow, step for step, through the command line.

download -> prepare -> crops -> synthetic crops -> dual fit on the crops folder -> evaluate -> run,
on the KSDD2 fixture (offline, 64x32), and on KolektorSDD when it is there.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dualpatch.data import KolektorSDD, KolektorSDD2
from dualpatch.data.crops import connected_regions
from tests.support.common import requires_kolektor
from tests.support.ksdd2_fixture import make_ksdd2_zip

H, W = 64, 32


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def rows_of(folder):
    with (folder / "crops.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def region_count(dataset, size) -> int:
    return sum(len(connected_regions(s.mask(size))) for s in dataset.defective())


def test_reference_workflow_on_the_ksdd2_fixture(tmp_path, run_cli):
    archive = make_ksdd2_zip(tmp_path / "KolektorSDD2.zip", n_train=10, n_test=6, n_pos_train=3)
    raw, data = tmp_path / "ksdd2-raw", tmp_path / "ksdd2"
    ok(run_cli("data", "download", "ksdd2", "--archive", archive, "--out", raw))
    ok(run_cli("data", "prepare", "ksdd2", "--src", raw, "--out", data, "--image-size", H, W))
    size = ["--image-size", H, W]

    crops = tmp_path / "crops"
    ok(run_cli("data", "crops", "--dataset", "ksdd2", "--data", data, "--out", crops, *size))
    real = rows_of(crops)
    assert len(real) == region_count(KolektorSDD2(data, "train"), (H, W)) >= 3

    # a dual model fed from the folder is the model that --defects crop fits
    common = ["--dataset", "ksdd2", "--data", data, "--bank", "dual", *size, "--coreset-min", 40]
    ok(run_cli("fit", *common, "--defects", "crop", "--out", tmp_path / "m-crop"))
    ok(run_cli("fit", *common, "--crops", crops, "--out", tmp_path / "m-folder"))
    tensors = [(tmp_path / m / "model.safetensors").read_bytes() for m in ("m-crop", "m-folder")]
    assert tensors[0] == tensors[1]

    # synthetic crops join the real ones in the same folder
    ok(run_cli("augment", "paste", "--dataset", "ksdd2", "--data", data, "--n", 3, "--out", crops,
               "--as-crops", "--append", "--crop-size", H, W))  # fmt: skip
    both = rows_of(crops)
    assert both[: len(real)] == real
    assert len(both) > len(real) and {r["origin"] for r in both[len(real) :]} == {"paste"}

    model, results = tmp_path / "model", tmp_path / "results"
    # no normal image held out for a threshold: the experiment's run below fits on all of them
    ok(run_cli("fit", *common, "--crops", crops, "--threshold-holdout", 0, "--out", model))
    recorded = json.loads((model / "model.json").read_text())["defect_crop_files"]
    assert len(recorded) == len(both)
    ok(
        run_cli(
            "evaluate", "--model", model, "--dataset", "ksdd2", "--data", data, "--out", results
        )
    )
    evaluated = json.loads((results / "metrics.json").read_text())

    config = tmp_path / "ksdd2-tiny.yaml"
    config.write_text(
        f"dataset: ksdd2\ndata: {data}\nimage_size: [{H}, {W}]\ncoreset_min: 40\n"
        f"crops: [{crops}]\n"
        "runs:\n  - {name: standard_patchcore, bank: single}\n"
        "  - {name: dual_patchcore, bank: dual}\n"
    )
    out = tmp_path / "run"
    ok(run_cli("run", "--config", config, "--out", out, timeout=300))
    # as the reference's scripts read it
    loaded = np.load(out / "results.npy", allow_pickle=True).item()
    assert {"standard_patchcore", "dual_patchcore"} <= set(loaded)
    for key in ("standard_patchcore", "dual_patchcore"):
        assert set(loaded[key]) >= {"image_auc", "pixel_auc"}
        assert all(0.0 <= loaded[key][k] <= 1.0 for k in ("image_auc", "pixel_auc"))
    # the experiment's dual run is the model fit and evaluate made
    assert loaded["dual_patchcore"]["image_auc"] == evaluated["image_auroc"]
    assert loaded["dual_patchcore"]["pixel_auc"] == evaluated["pixel_auroc"]


def test_cli_refusals_are_one_line(tmp_path, run_cli, demo_root):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    r = run_cli("data", "crops", "--dataset", "demo", "--data", demo_root, "--out", mine,
                "--image-size", H, W, "--force")  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith(f"error: {mine}: ")
    assert "not written by dualpatch" in r.stderr and r.stderr.count("\n") == 1
    (mine / "crops.csv").write_text("crop\n../keep.txt\n")
    r = run_cli("fit", "--dataset", "demo", "--data", demo_root, "--crops", mine,
                "--bank", "single", "--out", tmp_path / "m")  # fmt: skip
    assert r.returncode == 1 and "--crops feeds the defect bank" in r.stderr
    r = run_cli("fit", "--dataset", "demo", "--data", demo_root, "--crops", mine,
                "--image-size", H, W, "--out", tmp_path / "m")  # fmt: skip
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert f"{mine / 'crops.csv'}: row 1: '../keep.txt' points outside" in r.stderr
    assert not (tmp_path / "m").exists()


@requires_kolektor
def test_kolektorsdd_crops_folder_gives_the_scores_of_defects_crop(
    tmp_path, run_cli, kolektor_root
):
    """Done-when check: one crop per native connected defect region of the default training
    split, and the dual model fed from that folder is the one --defects crop fits: the same bank
    tensors, the same scores (on every defective test image and as many good ones, to keep it
    short; the whole test split gave identical scores.csv files when this was written)."""
    crops = tmp_path / "crops"
    data = ["--dataset", "kolektorsdd", "--data", kolektor_root]
    ok(run_cli("data", "crops", *data, "--out", crops, timeout=300))
    train, test = KolektorSDD(kolektor_root, "train"), KolektorSDD(kolektor_root, "test")
    rows = rows_of(crops)
    # one crop per 8-connected region of the masks at their native resolution (34 in the public
    # copy), not per fragment of the masks downscaled to 320x128 (68)
    assert len(rows) == region_count(train, None) == 34
    assert region_count(train, (320, 128)) == 68
    assert len({r["source_image"] for r in rows}) == len(train.defective())
    images = [s.image_path for s in test.defective() + test.normal()[: len(test.defective())]]
    scores, tensors = {}, {}
    for name, how in (("crop", ["--defects", "crop"]), ("folder", ["--crops", crops])):
        model, results = tmp_path / name, tmp_path / f"{name}-scores"
        ok(run_cli("fit", *data, "--bank", "dual", *how, "--out", model, timeout=600))
        ok(run_cli("predict", *images, "--model", model, "--out", results, timeout=600))
        tensors[name] = (model / "model.safetensors").read_bytes()
        scores[name] = (results / "scores.csv").read_text()
    assert tensors["folder"] == tensors["crop"]
    assert scores["folder"] == scores["crop"]
    assert len(scores["crop"].splitlines()) == len(images) + 1
    print(f"kolektorsdd: {len(rows)} crops of {len(train.defective())} defective training images")


@pytest.mark.parametrize("key", ["crops", "runs.1.crops"])
def test_config_crops_key(tmp_path, key):
    from dualpatch.errors import ConfigError
    from dualpatch.experiment.config import load_config, resolve_run

    cfg = load_config(None, [f"{key}=some/folder"])
    node = cfg if key == "crops" else cfg["runs"][1]
    assert node["crops"] == ["some/folder"]
    assert resolve_run(cfg, cfg["runs"][1])["crops"] == ["some/folder"]
    assert "crops" not in resolve_run(cfg, cfg["runs"][0])  # the single run has no defect bank
    with pytest.raises(ConfigError, match="single-bank run"):
        load_config(None, ["runs.0.crops=[x]"])
    with pytest.raises(ConfigError, match="list of crop folders"):
        load_config(None, [f"{key}=3"])
