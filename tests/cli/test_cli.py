"""The command line, run as a user would: a subprocess per command, on the tiny demo set."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = ("160", "64")
METRICS = ("image_auroc", "pixel_auroc", "image_ap", "pixel_aupro", "f1_max")


@pytest.fixture(scope="module")
def fitted(run_cli, demo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "model"
    r = run_cli(
        "fit", "--dataset", "demo", "--data", demo_root, "--out", out,
        "--image-size", *SIZE, "--coreset-min", "200", "--cache-dir", out.parent / "cache",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (out.parent / "fit.log").write_text(r.stdout + r.stderr)
    return out


def test_fit_writes_a_dual_model(fitted):
    assert (fitted / "model.safetensors").is_file()
    meta = json.loads((fitted / "model.json").read_text())
    assert meta["class"] == "DualPatchCore"
    assert meta["params"]["image_size"] == [160, 64]
    assert meta["grid"] == [20, 8]
    # the image-level check's summaries: fit calibrates it on its held-out normals
    assert set(meta["tensors"]) == {"normal_bank", "defect_bank", "gate_summaries"}


def test_fit_stores_a_threshold_by_default(fitted):
    """No threshold option: 20 % of the 60 normal training images held out, the guarded rule's
    tau and threshold set on them, what it rests on recorded, and said on the way."""
    meta = json.loads((fitted / "model.json").read_text())
    assert meta["params"]["rule"] == "guarded"
    record = meta["threshold_record"]
    assert record["images"] == 12 and record["quantile"] == 1.0
    assert record["target_false_reject_rate"] == 0.0
    assert meta["novelty_level_record"]["method"] == "held-out"
    assert meta["threshold"] == pytest.approx(min(record["score_quantile"], meta["novelty_level"]))
    log = (fitted.parent / "fit.log").read_text()
    assert f"threshold {meta['threshold']:.6g} (quantile 1 of the image scores of 12" in log
    # what a new normal image like the 12 risks: 1 in 13, said where the threshold is said
    assert record["expected_false_reject_rate"] == pytest.approx(1 / 13)
    assert "about 7.7% of new normal images like them" in log
    # 12 < 20 held-out images: one warning line
    assert len([line for line in log.splitlines() if "fewer than 20" in line]) == 1


def test_fit_without_threshold_and_with_an_unsafe_rule(run_cli, demo_root, tmp_path):
    out = tmp_path / "model"
    r = run_cli(
        "fit", "--dataset", "demo", "--data", demo_root, "--out", out, "--image-size", "64", "32",
        "--coreset-min", "20", "--rule", "patch", "--threshold-holdout", "0",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    unsafe = [line for line in r.stderr.splitlines() if "unsafe for novelties" in line]
    assert len(unsafe) == 1 and "'patch'" in unsafe[0]
    assert "no threshold stored" in r.stdout
    meta = json.loads((out / "model.json").read_text())
    assert "threshold" not in meta and meta["params"]["rule"] == "patch"
    evaluated = run_cli(
        "evaluate", "--model", out, "--dataset", "demo", "--data", demo_root,
        "--out", tmp_path / "results",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert "no stored threshold" in evaluated.stdout
    assert "threshold" not in json.loads((tmp_path / "results" / "metrics.json").read_text())


def test_fit_uses_the_feature_cache(fitted):
    # its own cache folder: evaluate and predict now cache the images they score in the shared one
    cache = fitted.parent / "cache"
    cached = list(cache.glob("*.safetensors"))
    # one per training image of the demo set: 60 normal + 12 defective (defect bank, image context)
    assert len(cached) == 72
    # and the normal bank, shared with later fits of the same images and settings
    assert len(list(cache.glob("banks/*.safetensors"))) == 1


def test_evaluate(fitted, run_cli, demo_root, tmp_path):
    out = tmp_path / "results"
    r = run_cli(
        "evaluate", "--model", fitted, "--dataset", "demo", "--data", demo_root, "--out", out
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRICS) <= set(metrics)
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 45  # the demo test split
    assert {r["label"] for r in rows} == {"0", "1"}
    assert "image_auroc" in r.stdout
    # metrics.json recomputed from what evaluate wrote beside it: scores.csv, the saved maps and
    # the dataset's own masks (in scores.csv's order)
    from safetensors import safe_open

    from dualpatch.data import load_dataset
    from dualpatch.metrics.evaluation import evaluate

    with safe_open(str(out / "predictions.safetensors"), framework="numpy") as f:
        ids = json.loads(f.metadata()["ids"])
        maps = f.get_tensor("anomaly_maps")
    assert ids == [row["image_id"] for row in rows]
    assert maps.shape == (45, int(SIZE[0]), int(SIZE[1])) and maps.dtype == np.float32
    by_id = {s.id: s for s in load_dataset("demo", demo_root, "test")}
    masks = np.stack([by_id[i].mask((int(SIZE[0]), int(SIZE[1]))) for i in ids])
    labels = np.array([int(row["label"]) for row in rows])
    assert labels.tolist() == [by_id[i].label for i in ids]
    again = evaluate(labels, np.array([float(row["score"]) for row in rows]), masks, maps)
    for key in ("image_auroc", "image_ap", "f1_max", "pixel_auroc", "pixel_aupro"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-9), key
    assert again["f1_threshold"] == pytest.approx(metrics["f1_threshold"], rel=1e-7)
    # the stored threshold: used, said, and its verdicts (score above it) recomputable
    stored = json.loads((fitted / "model.json").read_text())["threshold"]
    assert metrics["threshold"] == stored
    assert f"threshold {stored:.6g} from {fitted / 'model.json'}" in r.stdout
    flagged = np.array([float(row["score"]) for row in rows]) > stored
    tp = int(np.sum(flagged & (labels == 1)))
    assert metrics["recall_at_threshold"] == pytest.approx(tp / labels.sum())
    assert metrics["f1_at_threshold"] == pytest.approx(2 * tp / (flagged.sum() + labels.sum()))
    good_flagged = np.sum(flagged & (labels == 0)) / np.sum(labels == 0)
    assert metrics["false_reject_rate_at_threshold"] == pytest.approx(good_flagged)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["threshold"]["value"] == stored


def test_predict(fitted, run_cli, demo_root, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = ["10072.png", "10090.png", "10110.png"]  # test split: good, good, defective
    for n in names:
        shutil.copy(demo_root / "test" / n, images / n)
    single = tmp_path / "one.png"
    shutil.copy(demo_root / "test" / "10100.png", single)
    out = tmp_path / "pred"
    r = run_cli("predict", images, single, "--model", fitted, "--out", out)
    assert r.returncode == 0, r.stderr
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["image"]).name for r in rows] == [*names, "one.png"]
    assert all(math.isfinite(float(r["score"])) for r in rows)
    # each map mirrors its input's path below the folder that holds all inputs
    assert [r["map"] for r in rows] == [*(f"maps/images/{n}" for n in names), "maps/one.png"]
    pngs = sorted(p.relative_to(out).as_posix() for p in (out / "maps").rglob("*.png"))
    assert pngs == sorted(r["map"] for r in rows)
    for p in (out / "maps").rglob("*.png"):
        arr = np.asarray(Image.open(p))
        assert arr.shape == (160, 64) and arr.dtype == np.uint8


# The failure cases below run ``main()`` in this process: the same entry point as the console
# script, without paying a second or more of interpreter and torch start-up per case.


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    import warnings

    from dualpatch.cli.main import main

    monkeypatch.setenv("DUALPATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DUALPATCH_OFFLINE", "1")
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it

    def run(*args) -> tuple[int, str, str]:
        """Exit status the process would have, its stdout and stderr."""
        monkeypatch.setattr("sys.argv", ["dualpatch", *map(str, args)])
        try:
            main()
            code = 0  # main() returned: the process exits 0
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code
        except Exception as exc:  # what the user would see as a traceback
            pytest.fail(f"main() let {type(exc).__name__} escape (a traceback for the user): {exc}")
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_unknown_backbone_exits_nonzero(cli, demo_root, tmp_path):
    code, _, err = cli(
        "fit", "--dataset", "demo", "--data", demo_root, "--out", tmp_path / "m",
        "--backbone", "vgg16",
    )
    assert code == 2  # a usage error, reported by click
    assert "vgg16" in err and "--backbone" in err
    assert not (tmp_path / "m").exists()


def test_missing_kolektorsdd_folder(cli, tmp_path):
    missing = tmp_path / "no" / "such" / "kolektorsdd"
    code, _, err = cli(
        "fit", "--dataset", "kolektorsdd", "--data", missing, "--out", tmp_path / "m"
    )
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert str(missing) in lines[0]
    assert not (tmp_path / "m").exists()


def test_predict_corrupt_image(fitted, cli, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(300))
    code, _, err = cli("predict", bad, "--model", fitted, "--out", tmp_path / "pred")
    assert code == 1
    assert f"error: {bad}: " in err
    assert "Traceback" not in err
    assert not (tmp_path / "pred" / "scores.csv").exists()


def test_predict_error_is_a_line_of_its_own(fitted, cli, tmp_path):
    """The error is not glued to the end of a progress bar's last redraw."""
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    code, _, err = cli("predict", bad, "--model", fitted, "--out", tmp_path / "pred")
    assert code == 1
    assert any(line.startswith(f"error: {bad}") for line in err.splitlines()), err


def test_predict_missing_model(cli, demo_root, tmp_path):
    code, _, err = cli("predict", demo_root / "test" / "10072.png", "--model", tmp_path / "none",
                       "--out", tmp_path / "pred")
    assert code == 1
    assert "error: " in err and str(tmp_path / "none") in err


def test_predict_missing_image(fitted, cli, tmp_path):
    ghost = tmp_path / "ghost.png"
    code, _, err = cli("predict", ghost, "--model", fitted, "--out", tmp_path / "p")
    assert err.strip() == f"error: {ghost}: file not found"
    assert code == 1


def test_bad_train_items_exit_1(cli, tmp_path):
    code, _, err = cli(
        "fit", "--dataset", "kolektorsdd", "--data", tmp_path, "--out", tmp_path / "m",
        "--train-items", "1-x",
    )
    assert "error: --train-items" in err
    assert code == 1
