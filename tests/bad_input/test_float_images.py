"""High-bit-depth images are scaled by their type's range, never stretched per image: a dark and
a washed-out float picture of one surface score differently, 16-bit data scores the same from a
16-bit PNG and from a 32-bit integer TIFF, and values outside the type's range are refused in one
line that says how to convert."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dualpatch.data import read_image
from tests.support.bad_input import error_line, save, texture


def _gray() -> np.ndarray:
    """A surface as float in [0, 1] (one channel of the shared texture)."""
    return texture(3)[..., 0].astype(np.float64) / 255.0


def _scores(cli, model_dir, files: dict[str, Path], out: Path) -> dict[str, float]:
    code, _, err = cli("predict", *files.values(), "--model", model_dir, "--out", out)
    assert code == 0, err
    with (out / "scores.csv").open() as f:
        by_name = {Path(r["image"]).name: float(r["score"]) for r in csv.DictReader(f)}
    return {k: by_name[p.name] for k, p in files.items()}


def test_dark_and_washed_out_float_tiffs_differ(cli, model_dir, tmp_path):
    gray = _gray()
    files = {
        "dark": save(tmp_path / "in/dark.tif", (gray * 0.2).astype(np.float32)),
        "washed": save(tmp_path / "in/washed.tif", (0.5 + gray * 0.5).astype(np.float32)),
        "plain": save(tmp_path / "in/plain.tif", gray.astype(np.float32)),
    }
    # read as they are: a 0..1 float is the fraction of full scale, as 8-bit is of 255
    np.testing.assert_array_equal(
        read_image(files["dark"])[..., 0], np.rint(gray.astype(np.float32) * 0.2 * 255)
    )
    scores = _scores(cli, model_dir, files, tmp_path / "pred")
    assert scores["dark"] != pytest.approx(scores["washed"], rel=1e-3)
    assert scores["dark"] != pytest.approx(scores["plain"], rel=1e-3)


@pytest.mark.parametrize("peak", [60000, 200], ids=["bright", "dark-below-256"])
def test_16bit_data_scores_alike_from_png_and_int32_tiff(cli, model_dir, tmp_path, peak):
    """A dark 16-bit image (all values below 256) was read as 8-bit from an int32 TIFF."""
    data = np.rint(_gray() * peak).astype(np.uint16)
    files = {
        "png": save(tmp_path / "in/a16.png", data),
        "tiff32": save(tmp_path / "in/a32.tif", data.astype(np.int32)),
        "tiff16": save(tmp_path / "in/b16.tif", data),
    }
    np.testing.assert_array_equal(read_image(files["png"]), read_image(files["tiff32"]))
    scores = _scores(cli, model_dir, files, tmp_path / "pred")
    assert scores["tiff32"] == pytest.approx(scores["png"], rel=1e-6)
    assert scores["tiff16"] == pytest.approx(scores["png"], rel=1e-6)


@pytest.mark.parametrize(
    ("name", "array", "what"),
    [
        ("raw.tif", _gray().astype(np.float32) * 4095, "divide by the sensor's full scale"),
        ("signed.tif", _gray().astype(np.float32) - 0.5, "outside 0..1"),
        ("big.tif", (_gray() * 1e6).astype(np.int32), "save it as 8- or 16-bit"),
    ],
    ids=["float-12bit-counts", "float-negative", "int32-above-16bit"],
)
def test_out_of_range_high_depth_images_are_refused(cli, model_dir, tmp_path, name, array, what):
    image = save(tmp_path / "in" / name, array)
    code, _, err = cli("predict", image, "--model", model_dir, "--out", tmp_path / "pred")
    assert code == 1
    error_line(err, image, what)
    assert not (tmp_path / "pred").exists()
