"""Paths confined to their folder, size limits, the feature cache's off switch (issue 10, 13-16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tests.support.bad_input import (
    error_line,
    make_augmented,
    make_folder,
    save,
    texture,
    warning_lines,
)

# the shared fixtures ``cli`` (the CLI in this process) and ``model_dir`` (a tiny saved model)
# come from tests/bad_input/conftest.py

# no threshold hold-out: these folders hold a handful of normal images, and the warning that a
# threshold rests on fewer than 20 of them is not what these tests look at
FIT = ("--image-size", 64, 32, "--coreset-min", 20, "--threshold-holdout", 0)


# ----------------------------------------------------------------------------- 13: manifest paths


@pytest.mark.parametrize("where", ["../other/test/x.png", "/etc/passwd"])
def test_manifest_paths_stay_inside_their_folder(where, cli, tmp_path):
    data = make_folder(tmp_path / "data")
    aug = make_augmented(tmp_path / "synth")
    save(tmp_path / "other/test/x.png", texture(9))
    manifest = aug / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace("imgs/00000.png", where, 1)
    manifest.write_text("\n".join(lines) + "\n")
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--bank", "dual",
                       "--augmented", aug, "--out", tmp_path / "model", *FIT)  # fmt: skip
    assert code == 1
    error_line(err, manifest, "line 2", where, "outside")
    assert not (tmp_path / "model").exists()


def test_model_file_cannot_point_at_a_device(cli, model_dir, tmp_path):
    """A recorded weights path is only hashed if it is a regular file."""
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    meta = json.loads((model / "model.json").read_text())
    meta["backbone_weights"] = {"file": "/dev/zero", "sha256": "0" * 64}
    (model / "model.json").write_text(json.dumps(meta))
    image = save(tmp_path / "a.png", texture(1))
    code, _, err = cli("predict", image, "--model", model, "--out", tmp_path / "p")
    assert code == 1
    error_line(err, model / "model.json", "/dev/zero")


# ----------------------------------------------------------------------------- 14: streaming


def test_map_png_does_not_depend_on_the_other_images(fitted_single, tiny_test, tmp_path):
    from dualpatch.serving.predict_io import write_predictions

    paths = [s.image_path for s in tiny_test]
    write_predictions(fitted_single, paths, tmp_path / "all")
    write_predictions(fitted_single, paths[-1:], tmp_path / "one")
    name = Path(paths[-1]).name
    all_maps = list((tmp_path / "all/maps").rglob(name))
    assert len(all_maps) == 1
    assert np.array_equal(np.asarray(Image.open(all_maps[0])),
                          np.asarray(Image.open(tmp_path / "one/maps" / name)))  # fmt: skip


def test_predict_batches_hold_one_batch_at_a_time(fitted_single, tiny_test):
    sizes = [len(batch) for batch, _, _ in fitted_single.predict_batches(tiny_test)]
    assert sum(sizes) == len(tiny_test) and max(sizes) <= fitted_single.batch_size


# ----------------------------------------------------------------------------- 15: size limits


def test_size_too_large_is_refused(cli, tmp_path):
    data = make_folder(tmp_path / "data")
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--image-size", 100000, 100000,
                       "--out", tmp_path / "m")  # fmt: skip
    assert code == 1
    error_line(err, "--image-size 100000 100000", "DUALPATCH_MAX_SIDE")
    assert not (tmp_path / "m").exists()


def test_huge_image_is_refused_before_decoding(cli, model_dir, tmp_path, monkeypatch):
    big = tmp_path / "in" / "big.png"
    big.parent.mkdir()
    Image.new("L", (8000, 8000)).save(big)  # about 100 KB on disk, 64 megapixels decoded
    decoded = []  # the sizes of the images whose pixels Pillow decoded in this call
    load = ImageFile.ImageFile.load

    def counting_load(self):
        decoded.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    code, _, err = cli("predict", big, "--model", model_dir, "--out", tmp_path / "p")
    assert code == 1
    error_line(err, big, "8000x8000", "DUALPATCH_MAX_PIXELS")
    assert (8000, 8000) not in decoded  # refused from the header alone


def test_pixel_limit_override(cli, model_dir, tmp_path, monkeypatch):
    image = save(tmp_path / "in" / "a.png", texture(1))
    monkeypatch.setenv("DUALPATCH_MAX_PIXELS", "1000")
    code, _, err = cli("predict", image, "--model", model_dir, "--out", tmp_path / "p")
    assert code == 1
    error_line(err, image, "DUALPATCH_MAX_PIXELS")
    monkeypatch.setenv("DUALPATCH_MAX_PIXELS", "lots")
    code, _, err = cli("predict", image, "--model", model_dir, "--out", tmp_path / "p")
    assert code == 1
    error_line(err, "DUALPATCH_MAX_PIXELS='lots'")


@pytest.mark.parametrize("items", ["1-1000000000", "0-3", "9-2"])
def test_train_items_range(items, cli, tmp_path):
    code, _, err = cli("fit", "--dataset", "kolektorsdd", "--data", tmp_path, "--train-items",
                       items, "--out", tmp_path / "m")  # fmt: skip
    assert code == 1
    error_line(err, "--train-items")
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- 16: feature cache


def _fit(cli, data, out, *extra):
    return cli("fit", "--dataset", "folder", "--data", data, "--bank", "single", "--out", out,
               *FIT, *extra)  # fmt: skip


def test_no_cache_writes_no_cache(cli, tmp_path, monkeypatch):
    data = make_folder(tmp_path / "data")
    monkeypatch.setenv("DUALPATCH_CACHE", str(tmp_path / "cache"))
    code, _, err = _fit(cli, data, tmp_path / "m", "--no-cache")
    assert code == 0, err
    assert not (tmp_path / "cache").exists()


def test_empty_cache_variable_means_no_cache(cli, tmp_path, monkeypatch):
    data = make_folder(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DUALPATCH_CACHE", "")
    code, _, err = _fit(cli, data, tmp_path / "m")
    assert code == 0, err
    assert list(work.iterdir()) == []


def test_unwritable_cache_warns_once_and_carries_on(cli, tmp_path, monkeypatch):
    data = make_folder(tmp_path / "data")
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DUALPATCH_CACHE", str(blocker / "features"))
    code, _, err = _fit(cli, data, tmp_path / "m")
    assert code == 0, err
    (line,) = warning_lines(err)
    assert "feature cache not writable" in line and "--no-cache" in line
    assert (tmp_path / "m/model.json").is_file() and blocker.read_text() == "not a folder"
