"""predict's pieces: the verdict and its threshold, the overlay, the aspect-ratio line."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from dualpatch.errors import DataError
from dualpatch.serving.predict_io import aspect_warning, colour_overlay, verdict, verdict_threshold


def test_verdict_is_strictly_above_the_threshold():
    assert [verdict(s, 1.0) for s in (0.5, 1.0, 1.0000001)] == ["ok", "ok", "defect"]
    assert verdict(5.0, None) == ""


def test_threshold_comes_from_the_option_then_the_model(fitted_single, tmp_path):
    from dualpatch.errors import ModelFileError
    from tests.support.model_files import edit_card

    fitted_single.save(tmp_path)  # fitted without a threshold
    assert verdict_threshold(tmp_path, None) == (None, "none")
    assert verdict_threshold(tmp_path, 0.5) == (0.5, "--threshold")
    with pytest.raises(DataError, match="--threshold nan"):
        verdict_threshold(tmp_path, math.nan)
    edit_card(tmp_path, lambda meta: meta.update(threshold=0.25))
    assert verdict_threshold(tmp_path, None) == (0.25, "model.json")
    # model.json is read by the card alone, which refuses a threshold that is not a number
    edit_card(tmp_path, lambda meta: meta.update(threshold="high"))
    with pytest.raises(ModelFileError, match="model.json.*threshold"):
        verdict_threshold(tmp_path, None)


def test_overlay_is_at_the_photo_size_and_colours_only_the_hot_area():
    photo = np.full((300, 200, 3), 128, np.uint8)
    amap = np.zeros((64, 32), np.float32)
    amap[:16, :8] = 2.0  # top-left quarter at twice the threshold
    out = colour_overlay(photo, amap, reference=1.0)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.array_equal(out[200:, 100:], photo[200:, 100:])  # cold: the photo unchanged
    hot = out[:60, :40].reshape(-1, 3).mean(axis=0)
    assert hot[0] > 180 and hot[1] < 60 and hot[2] < 60  # red at twice the threshold


def test_aspect_warning_names_the_count_and_the_stretch(tmp_path):
    files = []
    for name, (w, h) in {"tall.png": (32, 64), "wide.png": (128, 64), "near.png": (33, 64)}.items():
        Image.new("RGB", (w, h)).save(tmp_path / name)
        files.append(tmp_path / name)
    line = aspect_warning(files, (64, 32))
    assert line.startswith("1 of 3 images have another aspect ratio than the model's 32x64 (WxH)")
    assert "stretched by up to 4.00x" in line and "wide.png: 128x64" in line
    assert aspect_warning(files[:1] + files[2:], (64, 32)) is None
