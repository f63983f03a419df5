"""Your own images, start to finish (issue 22): a folder as a new user has it -- JPEGs from three
cameras, of mixed sizes and orientations, spaces in the names, masks for some defects (one a
JPEG) -- through ``fit --good --defective --masks``, ``evaluate``, ``predict`` and ``serve``:
verdicts, every defect used where it can be (masked ones and pseudo-masked ones in the defect
bank, the validation part's in the threshold's check, the test part's in the metrics), overlays at
the photo's size, a warning for a squashed aspect ratio, and the review page in Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
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
    """good/ from three cameras (portrait 64x32, landscape 32x64, portrait 128x64 with .JPG),
    defective/ with masks for 4 of 6 (one mask a JPEG)."""
    for i in range(12):
        save(root / f"good/cam a/ok {i}.jpg", texture(i), quality=95)
    for i in range(3):
        save(root / f"good/cam b/wide ok {i}.jpg", texture(50 + i, 32, 64), quality=95)
    for i in range(3):  # the same surface at twice the resolution
        big = Image.fromarray(texture(70 + i)).resize((64, 128), Image.Resampling.BILINEAR)
        save(root / f"good/cam c/IMG {i:04d}.JPG", np.asarray(big), format="JPEG", quality=95)
    for i in range(6):
        save(root / f"defective/scratch {i}.jpg", defect(100 + i), quality=95)
        if i < 4:
            ext, kw = (".jpg", {"quality": 90}) if i == 0 else (".png", {})
            save(root / f"masks/scratch {i}_mask{ext}", box_mask(), **kw)
    return root


def own_folders(data: Path) -> list:
    """``--good DIR --defective DIR --masks DIR``: the three folders, no --dataset or --data."""
    return ["--good", data / "good", "--defective", data / "defective", "--masks", data / "masks"]


@pytest.fixture
def fitted(cli, tmp_path):  # noqa: F811
    data = photos(tmp_path / "my photos")
    model = tmp_path / "model"
    code, out, err = cli("fit", *own_folders(data), "--out", model, *SIZE)
    assert code == 0, err
    return data, model, out, err


def test_fit_on_own_folders_uses_every_defect_where_it_can(fitted, cli, tmp_path):  # noqa: F811
    data, model, out, err = fitted
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
        "4.jpg); used for image metrics and thresholds, and by pseudo-masks for the defect bank"
    ]
    # the split: 18 good -> 4 test, 4 validation, 10 train; 4 masked -> 1, 1, 2; 2 unmasked -> 1
    # test, 1 train. Every training defect is in the defect bank, the unmasked one by pseudo-mask
    assert "defect bank: 2 masked and 1 of 1 pseudo-masked defective images, 0 crops" in out
    meta = json.loads((model / "model.json").read_text())
    assert meta["class"] == "DualPatchCore" and meta["tensors"]["defect_bank"][0] > 0
    from dualpatch.data import FolderLayout, ImageFolder, split_validation
    from dualpatch.fileio import sha256_file as file_sha256

    layout = FolderLayout(*(str(p) for p in own_folders(data)[1::2]))
    fit_on, validation = split_validation(ImageFolder(".", "train", layout))
    defects = fit_on.defective()
    assert sorted(s.mask_known for s in defects) == [False, True, True]
    (unmasked,) = [s for s in defects if not s.mask_known]
    (pseudo,) = meta["pseudo_masks"]
    assert pseudo["file"] == unmasked.image_path.name and pseudo["patches"] > 0
    assert pseudo["sha256"] == file_sha256(unmasked.image_path)
    assert all(file_sha256(s.image_path) in meta["train_sha256"] for s in defects)
    # the validation part's good images set the threshold, its defect is checked against it
    assert meta["threshold"] is not None
    assert meta["threshold_record"]["images"] == len(validation.normal()) == 4
    checked = meta["threshold_record"]["validation"]
    assert (checked["images"], checked["defective"]) == (5, 1)
    assert checked["image_auroc"] == 1.0 and checked["recall_at_threshold"] == 1.0
    assert checked["false_reject_rate_at_threshold"] == 0.0
    assert "validation: 4 good, 1 defective images; image AUROC 1.000; 1 of 1 defective " in out
    # evaluate on the automatic test split: image metrics from all test defects (masked or not)
    code, _, err = cli("evaluate", "--model", model, *own_folders(data), "--out",
                       tmp_path / "eval")  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "eval" / "scores.csv").open()))
    assert sum(int(r["label"]) for r in rows) == 2 and len(rows) == 6
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["image_auroc"] == pytest.approx(1.0)
    assert metrics["train_overlap_images"] == 0  # neither the bank's nor validation's images


def test_no_mask_at_all_single_fits_and_dual_takes_pseudo_masks(cli, tmp_path):  # noqa: F811
    data = photos(tmp_path / "my photos")
    for m in (data / "masks").iterdir():
        m.unlink()
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--out", tmp_path / "m1",
                       *SIZE, "--bank", "single")  # fmt: skip
    assert code == 0, err
    assert "pseudo_masks" not in json.loads((tmp_path / "m1" / "model.json").read_text())
    code, out, err = cli("fit", "--dataset", "folder", "--data", data, "--out", tmp_path / "m2",
                         *SIZE)  # fmt: skip
    assert code == 0, err
    # 6 unmasked defects: 1 test, 1 validation, 4 to train on, each by its pseudo-mask
    assert "defect bank: 0 masked and 4 of 4 pseudo-masked defective images, 0 crops" in out
    pseudo = json.loads((tmp_path / "m2" / "model.json").read_text())["pseudo_masks"]
    assert len(pseudo) == 4 and all(r["patches"] > 0 for r in pseudo)
    # with no defective image at all, the dual bank has nothing: one line says the ways out
    shutil.rmtree(data / "defective")
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--out", tmp_path / "m3",
                       *SIZE)  # fmt: skip
    assert code == 1
    error_line(err, "no defective training images", "--bank single")


def test_predict_verdicts_overlays_and_review_page(fitted, cli, tmp_path):  # noqa: F811
    data, model, _, _ = fitted
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
    data, model, _, _ = fitted
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


def render_review(page_file: Path, screenshot: Path) -> tuple[list[str], str, list[str]]:
    """predict's index.html in Chromium, with no page error: (the images that loaded, the
    summary line, the cards' verdicts in page order); a screenshot saved to ``screenshot``."""
    with browser.browser() as b:
        page = b.new_page()
        page.goto(page_file.as_uri())
        loaded = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0)"
                               ".map(i => i.getAttribute('src'))")  # fmt: skip
        summary = page.evaluate("document.getElementById('summary').textContent")
        verdicts = page.evaluate("Array.from(document.querySelectorAll('.card .verdict'), "
                                 "e => e.textContent)")  # fmt: skip
        screenshot.write_bytes(page.screenshot(width=1000))
        assert page.errors() == []
    return loaded, summary, verdicts


@pytest.mark.skipif(NO_BROWSER is not None, reason=f"browser test skipped: {NO_BROWSER}")
def test_predict_review_page_renders_in_chromium(fitted, cli, tmp_path):  # noqa: F811
    _, model, _, _ = fitted
    new = tmp_path / "new photos"
    save(new / "good one.jpg", texture(300), quality=95)
    save(new / "bad one.jpg", defect(301), quality=95)
    out = tmp_path / "pred"
    code, _, err = cli("predict", new, "--model", model, "--out", out)
    assert code == 0, err
    loaded, summary, verdicts = render_review(out / "index.html", tmp_path / "review.png")
    assert sorted(loaded) == ["overlays/bad one.jpg", "overlays/good one.jpg"]
    assert "1 defect" in summary and "1 ok" in summary and verdicts == ["defect", "ok"]


def test_run_cross_validates_a_plain_folder_with_named_subfolders(cli, tmp_path):  # noqa: F811
    data = photos(tmp_path / "my photos")
    (data / "good").rename(data / "OK parts")
    out = tmp_path / "results"
    code, stdout, err = cli("run", "--set", "dataset=folder", "--set", f"data={data}",
                            "--set", "good=OK parts", "--set", f"out={out}",
                            "--set", "image_size=[64, 32]", "--set", "coreset_min=20",
                            "--set", "bootstrap=10", "--set", "folds=2",
                            "--set", "runs=[{name: single, bank: single}]")  # fmt: skip
    assert code == 0, err
    dataset = json.loads((out / "dataset.json").read_text())
    assert "OK parts" in json.dumps(dataset)
    metrics = json.loads((out / "metrics.json").read_text())["single"]
    assert 0.5 < metrics["image_auroc"] <= 1.0
    assert "Traceback" not in err


def test_own_folders_fit_predict_serve_and_review_end_to_end(fitted, cli, cli_env, tmp_path):  # noqa: F811
    """The issue's "done when": a model from ``fit --good --defective --masks`` (fixture), then
    ``predict`` and ``serve`` on new photos of every shape: each verdict as expected, the same
    from both, squashing said, and predict's index.html rendered in Chromium."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from tests.cli.test_serve import Server

    _, model, _, _ = fitted
    new = tmp_path / "new photos"
    expected = {
        "good part.jpg": "ok",
        "good part big.JPG": "ok",
        "scratched part.jpg": "defect",
        "scratched landscape.jpg": "defect",
    }
    save(new / "good part.jpg", texture(300), quality=95)
    big = Image.fromarray(texture(301)).resize((64, 128), Image.Resampling.BILINEAR)
    save(new / "good part big.JPG", np.asarray(big), format="JPEG", quality=95)
    save(new / "scratched part.jpg", defect(302), quality=95)
    save(new / "scratched landscape.jpg", defect(303, (32, 64)), quality=95)
    out = tmp_path / "pred"
    code, stdout, err = cli("predict", new, "--model", model, "--out", out)
    assert code == 0, err
    (aspect,) = [w for w in warning_lines(err) if "aspect ratio" in w]  # never squashed silently
    assert "1 of 4 images" in aspect and "scratched landscape.jpg" in aspect
    rows = {Path(r["image"]).name: r for r in csv.DictReader((out / "scores.csv").open())}
    assert {name: r["verdict"] for name, r in rows.items()} == expected
    key_file = tmp_path / "api-key"
    key_file.write_text("own-images-key\n")
    headers = {"X-API-Key": "own-images-key", "Content-Type": "image/jpeg"}
    server = Server(model, cli_env, "--api-key-file", str(key_file))  # a real one, on loopback
    try:
        for name, row in rows.items():
            body = (new / name).read_bytes()
            r = httpx.post(f"{server.url}/v1/inspect", content=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["verdict"] == expected[name], name
            assert r.json()["score"] == pytest.approx(float(row["score"]), rel=1e-4)
    finally:
        assert server.stop() in (0, -15, 143)
    if NO_BROWSER is not None:
        pytest.skip(f"index.html not rendered: {NO_BROWSER}")
    loaded, summary, verdicts = render_review(out / "index.html", tmp_path / "review.png")
    assert sorted(loaded) == sorted(r["overlay"] for r in rows.values())
    assert "2 defect" in summary and "2 ok" in summary
    assert verdicts == ["defect", "defect", "ok", "ok"]  # highest score first


def test_split_options_old_flags_and_what_fit_needs(cli, tmp_path):  # noqa: F811
    data = photos(tmp_path / "my photos")
    # no --data and no --good: one line says what is needed
    code, _, err = cli("fit", "--out", tmp_path / "m0", *SIZE)
    assert code == 1
    error_line(err, "--data is needed", "--good DIR")
    # the old flag names still work, with one line each; --threshold-holdout gives way to the
    # validation part, and says so
    code, out, err = cli("fit", "--good-dir", data / "good", "--defective-dir", data / "defective",
                         "--mask-dir", data / "masks", "--out", tmp_path / "m1", *SIZE,
                         "--threshold-holdout", "0.5", "--bank", "single")  # fmt: skip
    assert code == 0, err
    renamed = [w for w in warning_lines(err) if "is renamed" in w]
    assert len(renamed) == 3 and "--good-dir is renamed --good" in renamed[0]
    assert [w for w in warning_lines(err) if "--threshold-holdout" in w] == [
        "warning: --threshold-holdout 0.5 is ignored: the folder dataset's validation part sets "
        "the threshold (--validation-fraction)"
    ]
    record = json.loads((tmp_path / "m1" / "model.json").read_text())["threshold_record"]
    assert record["images"] == 4 and record["validation"]["defective"] == 1
    # --validation-fraction 0: no validation part; --threshold-holdout draws from the normals
    code, out, err = cli("fit", *own_folders(data), "--out", tmp_path / "m2", *SIZE,
                         "--validation-fraction", "0", "--threshold-holdout", "0.5",
                         "--bank", "single")  # fmt: skip
    assert code == 0, err
    record = json.loads((tmp_path / "m2" / "model.json").read_text())["threshold_record"]
    assert record["images"] == 7 and "validation" not in record  # half of 14 training normals
    assert "validation:" not in out
    code, _, err = cli("fit", *own_folders(data), "--out", tmp_path / "m3", *SIZE,
                       "--validation-fraction", "0.9")  # fmt: skip
    assert code == 1
    error_line(err, "validation_fraction is 0.9")


def test_data_crops_cuts_fit_s_defects_only(cli, tmp_path):  # noqa: F811
    """``data crops`` gives what ``fit --defects crop`` takes: the validation part's masked defect
    is not among them (fit scores it against the threshold)."""
    from dualpatch.data import ImageFolder, split_validation

    data = photos(tmp_path / "my photos")
    out = tmp_path / "crops"
    code, _, err = cli("data", "crops", "--data", data, "--dataset", "folder", "--image-size",
                       64, 32, "--out", out)  # fmt: skip
    assert code == 0, err
    sources = {r["source_image"] for r in csv.DictReader((out / "crops.csv").open())}
    fit_on, validation = split_validation(ImageFolder(data, "train"))
    assert sources == {str(s.image_path) for s in fit_on.masked_defective()}
    assert len(sources) == 2 and validation.masked_defective()
