"""Nothing silently wrong: results that used to be wrong without a word (issue 10, cases 6-12)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.bad_input import (
    error_line,
    make_folder,
    make_kolektor,
    save,
    texture,
    warning_lines,
)

# the shared fixtures ``cli`` (the CLI in this process) and ``model_dir`` (a tiny saved model)
# come from tests/bad_input/conftest.py

FIT = ("--image-size", 64, 32, "--coreset-min", 20)


def strict_json(path: Path):
    """JSON as the standard defines it: NaN or Infinity are errors."""

    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


# ----------------------------------------------------------------------------- 6: weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """The package's Lite0 weights as a file, and a 'fine-tuned' copy with one tensor changed."""
    from safetensors.torch import save_file

    from dualpatch.features.backbones import default_weights_file, read_state_dict

    package = default_weights_file("efficientnet_lite0")
    if package is None:
        pytest.skip("efficientnet_lite0 package weights not installed")
    folder = tmp_path_factory.mktemp("weights")
    state = read_state_dict(package)
    plain = folder / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(plain))
    key = next(k for k, v in state.items() if v.dtype.is_floating_point and v.ndim == 4)
    state[key] = state[key] * 1.5
    tuned = folder / "my_finetuned.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tuned))
    return {"plain": plain, "tuned": tuned}


def test_model_remembers_its_weights(cli, weights, tmp_path):
    data = make_folder(tmp_path / "data")
    tuned = tmp_path / "my_finetuned.safetensors"
    shutil.copy(weights["tuned"], tuned)
    model = tmp_path / "model"
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--bank", "single",
                       "--weights", tuned, "--out", model, *FIT)  # fmt: skip
    assert code == 0, err
    evaluate = ("evaluate", "--model", model, "--dataset", "folder", "--data", data)
    # the same file, still there and unchanged: used without --weights
    code, _, err = cli(*evaluate, "--out", tmp_path / "r1")
    assert code == 0, err
    with_tuned = strict_json(tmp_path / "r1/metrics.json")
    code, _, err = cli(*evaluate, "--out", tmp_path / "r2", "--weights", tuned)
    assert code == 0, err
    assert strict_json(tmp_path / "r2/metrics.json") == with_tuned
    # other weights given: refused, naming them
    code, _, err = cli(*evaluate, "--out", tmp_path / "r3", "--weights", weights["plain"])
    assert code == 1
    error_line(err, weights["plain"], "differs")
    # the fit's file changed on disk: refused, naming the model and the file
    shutil.copy(weights["plain"], tuned)
    code, _, err = cli(*evaluate, "--out", tmp_path / "r4")
    assert code == 1
    error_line(err, model / "model.json", tuned, "--weights")
    code, _, err = cli("predict", data / "test/good", "--model", model, "--out", tmp_path / "p")
    assert code == 1
    error_line(err, tuned)
    assert not (tmp_path / "r3").exists() and not (tmp_path / "r4").exists()
    assert not (tmp_path / "p").exists()


def test_package_weights_are_recorded(model_dir):
    from dualpatch.features.backbones import default_weights_file
    from dualpatch.fileio import sha256_file

    record = json.loads((model_dir / "model.json").read_text())["backbone_weights"]
    package = default_weights_file("efficientnet_lite0")
    assert record["file"] is None
    assert record["sha256"] == (sha256_file(package) if package else None)


# ----------------------------------------------------------------------------- 7: training split


def test_evaluate_warns_when_test_images_were_in_the_fit(cli, tmp_path):
    data = make_kolektor(tmp_path / "kolektor")
    model = tmp_path / "model"
    code, _, err = cli("fit", "--dataset", "kolektorsdd", "--data", data, "--bank", "single",
                       "--train-items", "34", "--out", model, *FIT)  # fmt: skip
    assert code == 0, err
    out = tmp_path / "results"
    code, _, err = cli("evaluate", "--model", model, "--dataset", "kolektorsdd", "--data", data,
                       "--out", out)  # fmt: skip
    assert code == 0, err
    (line,) = warning_lines(err)
    assert "2 of 3 test images were in the model's training set" in line and "kos34" in line
    assert strict_json(out / "metrics.json")["train_overlap_images"] == 2
    # what produced the figures is recorded beside them
    record = strict_json(out / "provenance.json")
    assert record["data"] == str(data.resolve()) and record["dataset"] == "kolektorsdd"
    assert record["model_sha256"] == strict_json(model / "model.json")["safetensors_sha256"]
    # the split the model was fit on: no warning
    code, _, err = cli("evaluate", "--model", model, "--dataset", "kolektorsdd", "--data", data,
                       "--train-items", "34", "--out", tmp_path / "r2")  # fmt: skip
    assert code == 0, err
    assert warning_lines(err) == []
    assert strict_json(tmp_path / "r2/metrics.json")["train_overlap_images"] == 0


# ----------------------------------------------------------------------------- 8: predict names


def test_predict_names_are_unique_and_traceable(cli, model_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    save(one / "a.png", texture(1))
    save(one / "a_1.png", texture(2))
    save(two / "a.png", texture(3))
    out = tmp_path / "pred"
    code, _, err = cli("predict", one, two, "--model", model_dir, "--out", out)
    assert code == 0, err
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(Path(r["image"]).parent.name, Path(r["image"]).name) for r in rows] == [
        ("one", "a.png"), ("one", "a_1.png"), ("two", "a.png")]  # fmt: skip
    maps = [r["map"] for r in rows]
    assert len(set(maps)) == 3 and sorted(maps) == sorted(
        p.relative_to(out).as_posix() for p in (out / "maps").rglob("*.png")
    )
    assert maps == ["maps/one/a.png", "maps/one/a_1.png", "maps/two/a.png"]
    # each map is its own image's: scoring one file alone gives the same map
    code, _, err = cli("predict", two / "a.png", "--model", model_dir, "--out", tmp_path / "p2")
    assert code == 0, err
    alone = np.asarray(Image.open(tmp_path / "p2/maps/a.png"))
    assert np.array_equal(alone, np.asarray(Image.open(out / "maps/two/a.png")))


# ----------------------------------------------------------------------------- 9: EXIF orientation


def rotated_with_exif(path: Path, upright: np.ndarray) -> Path:
    """``upright`` stored turned a quarter (EXIF Orientation 6: viewers turn it back)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.rot90(upright, k=1)  # orientation 6 = rotate 90 degrees clockwise to display
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif)
    return path


def test_exif_orientation_in_loaders_and_predict(cli, model_dir, tmp_path):
    from dualpatch.data import read_image
    from dualpatch.data.images import image_shape

    upright = texture(5)
    turned = rotated_with_exif(tmp_path / "in/turned.png", upright)
    save(tmp_path / "in/upright.png", upright)
    assert np.array_equal(read_image(turned), upright) and image_shape(turned) == upright.shape[:2]
    out = tmp_path / "pred"
    code, _, err = cli("predict", tmp_path / "in", "--model", model_dir, "--out", out)
    assert code == 0, err
    with (out / "scores.csv").open() as f:
        scores = {Path(r["image"]).name: float(r["score"]) for r in csv.DictReader(f)}
    assert scores["turned.png"] == scores["upright.png"]


def test_exif_rotated_training_defect_with_a_mask_drawn_as_shown(cli, tmp_path):
    data = make_folder(tmp_path / "data")
    # the training defect image stored turned: its mask (drawn on the upright view) must fit it
    rotated_with_exif(data / "train/crack/t0.png", texture(10))
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--bank", "dual",
                       "--out", tmp_path / "model", *FIT)  # fmt: skip
    assert code == 0, err


# ----------------------------------------------------------------------------- 10: augment n


@pytest.mark.parametrize("n", ["-5", "0", "abc"])
def test_augment_n_must_be_positive(n, cli, tmp_path):
    runs = f"runs=[{{bank: dual, augment: {{method: paste, n: {n}}}}}]"
    code, _, err = cli("run", "--set", runs, "--out", tmp_path / "out")
    assert code == 1
    error_line(err, "augment.n")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 11: odd TIFFs


def _tiff(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "multi-page":
        pages = [Image.fromarray(texture(i)) for i in range(3)]
        pages[0].save(path, save_all=True, append_images=pages[1:])
    elif kind == "lab":
        Image.fromarray(texture(1)).convert("LAB").save(path)
    elif kind == "negative-int32":
        Image.fromarray(np.full((64, 32), -7, np.int32)).save(path)
    return path


@pytest.mark.parametrize(("kind", "what"), [("multi-page", "3 pages"), ("lab", "L*a*b*"),
                                            ("negative-int32", "negative")])  # fmt: skip
def test_odd_tiffs_are_refused_naming_the_file(kind, what, cli, model_dir, tmp_path):
    image = _tiff(tmp_path / "in" / f"{kind}.tif", kind)
    code, _, err = cli("predict", image, "--model", model_dir, "--out", tmp_path / "pred")
    assert code == 1
    error_line(err, image, what)
    assert not (tmp_path / "pred").exists()


def test_cmyk_is_converted_with_a_warning(cli, model_dir, tmp_path):
    image = tmp_path / "in/cmyk.tif"
    image.parent.mkdir()
    Image.fromarray(texture(1)).convert("CMYK").save(image)
    code, _, err = cli("predict", image, "--model", model_dir, "--out", tmp_path / "pred")
    assert code == 0, err
    assert any(str(image) in w and "CMYK" in w for w in warning_lines(err))


# ----------------------------------------------------------------------------- 12: NaN in metrics


def test_metrics_json_has_null_and_a_reason_for_one_class(cli, model_dir, tmp_path):
    data = make_folder(tmp_path / "data")
    shutil.rmtree(data / "test/crack")
    for mask in (data / "ground_truth/crack").glob("c*_mask.png"):
        mask.unlink()
    out = tmp_path / "results"
    code, _, err = cli("evaluate", "--model", model_dir, "--dataset", "folder", "--data", data,
                       "--out", out)  # fmt: skip
    assert code == 0, err
    metrics = strict_json(out / "metrics.json")
    assert metrics["image_auroc"] is None and metrics["pixel_aupro"] is None
    assert "only good" in metrics["undefined"]["image_auroc"]
    assert set(metrics["undefined"]) == {k for k, v in metrics.items() if v is None}
    assert "n/a" in _  # the printed table
