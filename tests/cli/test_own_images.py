"""Your own images, start to finish (issue 22): a folder as a new user has it -- JPEGs of mixed
sizes and orientations, spaces in the names, masks for some defects (one a JPEG) -- through
``fit --dataset folder``, ``evaluate`` and ``predict``: verdicts, overlays at the photo's size, a
warning for a squashed aspect ratio, and the review page."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bad_input.conftest import cli  # noqa: F401  (the fixture)
from tests.support import browser
from tests.support.bad_input import box_mask, error_line, save, texture, warning_lines

SIZE = ("--image-size", 64, 32, "--coreset-min", 20)


def defect(seed: int, shape=(64, 32)) -> np.ndarray:
    img = texture(seed, *shape)
    m = box_mask(*shape) > 0
    img[m] = [250, 30, 30]  # a bright red blotch: far from every good patch
    return img


def photos(root: Path) -> Path:
    """good/ from two cameras (one landscape 128x64), defective/ with masks for 4 of 6."""
    for i in range(12):
        save(root / f"good/cam a/ok {i}.jpg", texture(i), quality=95)
    for i in range(3):
        save(root / f"good/cam b/wide ok {i}.jpg", texture(50 + i, 32, 64), quality=95)
    for i in range(6):
        save(root / f"defective/scratch {i}.jpg", defect(100 + i), quality=95)
        if i < 4:
            ext, kw = (".jpg", {"quality": 90}) if i == 0 else (".png", {})
            save(root / f"masks/scratch {i}_mask{ext}", box_mask(), **kw)
    return root


@pytest.fixture
def fitted(cli, tmp_path):  # noqa: F811
    data = photos(tmp_path / "my photos")
    model = tmp_path / "model"
    code, out, err = cli("fit", "--dataset", "folder", "--data", data, "--out", model, *SIZE,
                         "--threshold-holdout", "0.2")  # fmt: skip
    assert code == 0, err
    return data, model, err


def test_fit_on_a_plain_folder_uses_every_defect_it_can(fitted, cli, tmp_path):  # noqa: F811
    data, model, err = fitted
    assert "Traceback" not in err
    # the landscape camera's images are squashed into the portrait model: one line says so
    (aspect,) = [w for w in warning_lines(err) if "aspect ratio" in w]
    assert "stretched by up to 4.00x" in aspect and "wide ok" in aspect
    # one JPEG-mask warning, naming the count; the unmasked defects are no error
    assert [w for w in warning_lines(err) if "JPEG" in w] == [
        f"warning: {data / 'masks'}: 1 JPEG mask(s) thresholded at half range (JPEG blurs 0/255; "
        "PNG masks are exact)"
    ]
    assert [w for w in warning_lines(err) if "have no mask" in w] == [
        f"warning: {data / 'defective'}: 2 of 6 defective images have no mask (e.g. scratch "
        "4.jpg); used for image metrics and thresholds, not for the defect bank"
    ]
    meta = json.loads((model / "model.json").read_text())
    assert meta["threshold"] is not None
    # the masked training defects fed the defect bank, the unmasked one could not
    from dualpatch.data import ImageFolder
    from dualpatch.data.duplicates import file_sha256

    assert meta["class"] == "DualPatchCore" and meta["tensors"]["defect_bank"][0] > 0
    trained = meta["train_sha256"]
    defects = ImageFolder(data, "train").defective()
    assert [file_sha256(s.image_path) in trained for s in defects] == [
        s.mask_known for s in defects
    ]
    assert sorted(s.mask_known for s in defects) == [False, True, True, True]
    # evaluate on the automatic test split: image metrics from all test defects (masked or not)
    code, _, err = cli("evaluate", "--model", model, "--dataset", "folder", "--data", data,
                       "--out", tmp_path / "eval")  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    assert sum(int(r["label"]) for r in rows) == 2  # one masked + one unmasked defect in test
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["image_auroc"] == pytest.approx(1.0)


def test_bank_single_needs_no_masks_and_dual_names_the_unmasked(cli, tmp_path):  # noqa: F811
    data = photos(tmp_path / "my photos")
    for m in (data / "masks").iterdir():
        m.unlink()
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--out", tmp_path / "m1",
                       *SIZE, "--bank", "single")  # fmt: skip
    assert code == 0, err
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--out", tmp_path / "m2",
                       *SIZE)  # fmt: skip
    assert code == 1
    error_line(err, "defective training image has no mask", "--bank single")


def test_predict_verdicts_overlays_and_review_page(fitted, cli, tmp_path):  # noqa: F811
    data, model, _ = fitted
    new = tmp_path / "new photos"
    save(new / "good one.jpg", texture(300), quality=95)
    save(new / "bad one.jpg", defect(301), quality=95)
    save(new / "landscape bad.jpg", defect(302, (32, 64)), quality=95)
    out = tmp_path / "pred"
    code, stdout, err = cli("predict", new, "--model", model, "--out", out)
    assert code == 0, err
    threshold = json.loads((model / "model.json").read_text())["threshold"]
    assert f"verdicts at threshold {threshold:.6g} (from model.json)" in stdout
    # the landscape image is squashed into the portrait model: one line with the factor
    (aspect,) = [w for w in warning_lines(err) if "aspect ratio" in w]
    assert "1 of 3 images" in aspect and "stretched by up to 4.00x" in aspect
    rows = {Path(r["image"]).name: r for r in csv.DictReader((out / "scores.csv").open())}
    assert {k: r["verdict"] for k, r in rows.items()} == {
        "good one.jpg": "ok",
        "bad one.jpg": "defect",
        "landscape bad.jpg": "defect",
    }
    for r in rows.values():
        assert (float(r["score"]) > threshold) == (r["verdict"] == "defect")
        photo = Image.open(r["image"])
        overlay = Image.open(out / r["overlay"])
        assert overlay.size == photo.size and overlay.mode == "RGB"
        assert Image.open(out / r["map"]).size == (32, 64)
    # the good photo's overlay keeps it recognisable; the defective one's is coloured more
    change = {}
    for name in ("good one.jpg", "bad one.jpg"):
        over = np.asarray(Image.open(out / rows[name]["overlay"])).astype(int)
        change[name] = np.abs(over - np.asarray(Image.open(new / name)).astype(int)).mean()
    assert change["good one.jpg"] < change["bad one.jpg"]
    page = (out / "index.html").read_text()
    data_blob = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))
    assert [r["name"] for r in data_blob["rows"]][-1] == "good one.jpg"  # highest score first
    assert data_blob["counts"] == {"defect": 2, "ok": 1}
    assert data_blob["threshold"] == pytest.approx(threshold)
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from a network


def test_threshold_option_overrides_and_none_turns_verdicts_off(fitted, cli, tmp_path):  # noqa: F811
    data, model, _ = fitted
    new = tmp_path / "new"
    save(new / "a.png", texture(400))
    code, stdout, err = cli("predict", new, "--model", model, "--out", tmp_path / "p1",
                            "--threshold", "0", "--maps", "grey")  # fmt: skip
    assert code == 0, err
    assert "verdicts at threshold 0 (from --threshold)" in stdout
    (row,) = csv.DictReader((tmp_path / "p1" / "scores.csv").open())
    assert row["verdict"] == "defect" and row["overlay"] == "" and row["map"]
    bare = tmp_path / "bare"  # a model without a stored threshold
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--out", bare, *SIZE,
                       "--threshold-holdout", "0")  # fmt: skip
    assert code == 0, err
    assert json.loads((bare / "model.json").read_text()).get("threshold") is None
    code, stdout, err = cli("predict", new, "--model", bare, "--out", tmp_path / "p2")
    assert code == 0, err
    assert [w for w in warning_lines(err) if "verdicts are off" in w] == [
        "warning: the model has no stored threshold and no --threshold was given: verdicts are "
        "off (scores only); fit with --threshold-holdout or pass --threshold"
    ]
    (row,) = csv.DictReader((tmp_path / "p2" / "scores.csv").open())
    assert row["verdict"] == "" and "verdicts at" not in stdout
    code, _, err = cli("predict", new, "--model", model, "--out", tmp_path / "p3",
                       "--threshold", "nan")  # fmt: skip
    assert code == 1
    error_line(err, "--threshold nan")


def test_fit_needs_no_hand_made_test_folder(cli, tmp_path):  # noqa: F811
    """An MVTec-style folder with train/ only: fit works; evaluate says what it needs."""
    import shutil

    from tests.support.bad_input import make_folder

    root = make_folder(tmp_path / "mvtec")
    shutil.rmtree(root / "test")
    code, _, err = cli("fit", "--dataset", "folder", "--data", root, "--out", tmp_path / "m",
                       *SIZE)  # fmt: skip
    assert code == 0, err
    code, _, err = cli("evaluate", "--model", tmp_path / "m", "--dataset", "folder", "--data",
                       root, "--out", tmp_path / "e")  # fmt: skip
    assert code == 1
    error_line(err, root, "no test/ folder")


NO_BROWSER = browser.unavailable_reason()


@pytest.mark.skipif(NO_BROWSER is not None, reason=f"browser test skipped: {NO_BROWSER}")
def test_predict_review_page_renders_in_chromium(fitted, cli, tmp_path):  # noqa: F811
    _, model, _ = fitted
    new = tmp_path / "new photos"
    save(new / "good one.jpg", texture(300), quality=95)
    save(new / "bad one.jpg", defect(301), quality=95)
    out = tmp_path / "pred"
    code, _, err = cli("predict", new, "--model", model, "--out", out)
    assert code == 0, err
    with browser.browser() as b:
        page = b.new_page()
        page.goto((out / "index.html").as_uri())
        loaded = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0)"
                               ".map(i => i.getAttribute('src'))")  # fmt: skip
        summary = page.evaluate("document.getElementById('summary').textContent")
        verdicts = page.evaluate("Array.from(document.querySelectorAll('.card .verdict'), "
                                 "e => e.textContent)")  # fmt: skip
        (tmp_path / "review.png").write_bytes(page.screenshot(width=1000))
        assert page.errors() == []
    assert sorted(loaded) == ["overlays/bad one.jpg", "overlays/good one.jpg"]
    assert "1 defect" in summary and "1 ok" in summary and verdicts == ["defect", "ok"]


def test_run_cross_validates_a_plain_folder_with_named_subfolders(cli, tmp_path):  # noqa: F811
    data = photos(tmp_path / "my photos")
    (data / "good").rename(data / "OK parts")
    out = tmp_path / "results"
    code, stdout, err = cli("run", "--set", "dataset=folder", "--set", f"data={data}",
                            "--set", "good_dir=OK parts", "--set", f"out={out}",
                            "--set", "image_size=[64, 32]", "--set", "coreset_min=20",
                            "--set", "bootstrap=10", "--set", "folds=2",
                            "--set", "runs=[{name: single, bank: single}]")  # fmt: skip
    assert code == 0, err
    dataset = json.loads((out / "dataset.json").read_text())
    assert "OK parts" in json.dumps(dataset)
    metrics = json.loads((out / "metrics.json").read_text())["single"]
    assert 0.5 < metrics["image_auroc"] <= 1.0
    assert "Traceback" not in err
