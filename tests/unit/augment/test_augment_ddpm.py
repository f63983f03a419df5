"""The inpainting DDPM, scaled down: a tiny U-Net, a few steps, the demo set (plus a gray copy)."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from dualpatch.augment.ddpm import load_checkpoint, sample_ddpm, train_ddpm
from dualpatch.augment.manifest import COLUMNS, read_manifest
from dualpatch.errors import ConfigError, ModelFileError
from tests.support.ddpm import check_outputs, gray_folder, tiny


def test_cli_trains_and_samples(run_cli, demo_root, tmp_path):
    out = tmp_path / "aug"
    res = run_cli(
        "augment", "ddpm", "--dataset", "demo", "--data", demo_root, "--steps", 3, "--n", 3,
        "--out", out, "--channels", "8,16", "--batch", 4, "--sample-steps", 3, "--seed", 5,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "wrote 3 images" in res.stdout
    with (out / "manifest.csv").open() as f:
        assert tuple(csv.DictReader(f).fieldnames) == COLUMNS
    rows = check_outputs(out, 3)
    assert [r.seed for r in rows] == [5, 6, 7]
    model = out / "model"
    assert sorted(p.name for p in model.iterdir()) == [
        "config.json", "train_state.safetensors", "unet.safetensors",
    ]  # fmt: skip
    sha = hashlib.sha256((model / "unet.safetensors").read_bytes()).hexdigest()
    assert {r.model_sha256 for r in rows} == {sha}
    assert load_checkpoint(model).config["step"] == 3


def test_resume_continues_exactly(demo_train, tmp_path):
    """2 steps then 2 more give the very weights and optimizer state of 4 steps in one run."""
    train_ddpm(demo_train, tmp_path / "a", steps=2, cfg=tiny(), progress=False)
    config = train_ddpm(demo_train, tmp_path / "a", steps=4, cfg=tiny(), progress=False)
    assert config["step"] == 4
    train_ddpm(demo_train, tmp_path / "b", steps=4, cfg=tiny(), progress=False)
    for name in ("unet.safetensors", "train_state.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), name
    # Asking for fewer steps than saved trains nothing.
    before = (tmp_path / "a" / "unet.safetensors").read_bytes()
    train_ddpm(demo_train, tmp_path / "a", steps=3, cfg=tiny(), progress=False)
    assert (tmp_path / "a" / "unet.safetensors").read_bytes() == before


def test_sampling_is_deterministic_and_checks_the_model(demo_train, tmp_path):
    model = tmp_path / "model"
    train_ddpm(demo_train, model, steps=1, cfg=tiny(), progress=False)
    for out, seed in (("x", 0), ("y", 0), ("z", 1)):
        sample_ddpm(model, demo_train, 2, tmp_path / out, seed=seed, progress=False)

    def read(out: str) -> list[bytes]:
        return [(tmp_path / out / r.image).read_bytes() for r in read_manifest(tmp_path / out)]

    assert read("x") == read("y")
    assert read("x") != read("z")
    # Another architecture in the same folder is refused; so are altered weights.
    with pytest.raises(ConfigError, match="channels"):
        train_ddpm(demo_train, model, steps=2, cfg=tiny(channels=(8, 16, 16)), progress=False)
    data = bytearray((model / "unet.safetensors").read_bytes())
    data[-1] ^= 1
    (model / "unet.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="unet.safetensors"):
        sample_ddpm(model, demo_train, 1, tmp_path / "w", progress=False)


def test_grayscale_data_gives_a_one_channel_model_and_gray_images(demo_train, tmp_path):
    data = gray_folder(demo_train, tmp_path / "gray")
    model = tmp_path / "model"
    config = train_ddpm(data, model, steps=1, cfg=tiny(), progress=False)
    assert config["channels"] == 1
    assert config["unet"]["in_channels"] == 3 and config["unet"]["out_channels"] == 1
    sample_ddpm(model, data, 2, tmp_path / "out", progress=False)
    for r in check_outputs(tmp_path / "out", 2):
        assert Image.open(tmp_path / "out" / r.image).mode == "L"
