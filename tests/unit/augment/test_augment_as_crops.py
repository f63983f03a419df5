"""``augment ... --as-crops``: generated defects written as a crops folder, cut as the defect bank
cuts a generated image (``load_augmented``)."""

from __future__ import annotations

import numpy as np

from dualpatch.augment import load_augmented
from dualpatch.augment.ddpm import generate_ddpm, sample_ddpm, train_ddpm
from dualpatch.data.crop_folder import CropSpec
from dualpatch.data.crop_reader import read_crop_folder, read_rows
from tests.support.common import TINY
from tests.support.ddpm import gray_folder, tiny


def same_crops(a: list, b: list) -> bool:
    return len(a) == len(b) > 0 and all(
        np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
        for x, y in zip(a, b, strict=True)
    )


def test_ddpm_as_crops_equals_the_crops_of_its_images(demo_train, tmp_path):
    model = tmp_path / "model"
    train_ddpm(demo_train, model, steps=1, cfg=tiny(), progress=False)
    sample_ddpm(model, demo_train, 2, tmp_path / "images", seed=3, progress=False)
    rows = sample_ddpm(model, demo_train, 2, tmp_path / "crops", seed=3, progress=False,
                       as_crops=CropSpec(TINY))  # fmt: skip
    assert same_crops(
        read_crop_folder(tmp_path / "crops"), load_augmented([tmp_path / "images"], TINY)
    )
    assert {r.origin for r in rows} == {"ddpm"}
    assert read_rows(tmp_path / "crops") == rows


def test_ddpm_as_crops_keeps_its_model_beside_the_folder(demo_train, tmp_path):
    out = tmp_path / "crops"
    generate_ddpm(demo_train, 1, out, steps=1, cfg=tiny(), progress=False, as_crops=CropSpec(TINY))
    assert (tmp_path / "crops-ddpm-model" / "unet.safetensors").is_file()
    assert not (out / "model").exists() and (out / "crops.csv").is_file()


def test_grayscale_output_is_cut_as_it_reads_back(demo_train, tmp_path):
    data = gray_folder(demo_train, tmp_path / "gray")
    model = tmp_path / "model"
    train_ddpm(data, model, steps=1, cfg=tiny(), progress=False)
    sample_ddpm(model, data, 2, tmp_path / "images", progress=False)
    sample_ddpm(model, data, 2, tmp_path / "crops", progress=False, as_crops=CropSpec(TINY))
    assert same_crops(
        read_crop_folder(tmp_path / "crops"), load_augmented([tmp_path / "images"], TINY)
    )
