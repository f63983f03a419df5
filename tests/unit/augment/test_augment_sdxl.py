"""SDXL inpainting recipe, run on a tiny randomly initialised pipeline built here (no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dualpatch.augment import read_manifest
from dualpatch.cli.augment import app
from dualpatch.data import read_image, read_mask
from dualpatch.data.images import resize_image

pytest.importorskip("transformers")


def _byte_chars() -> list[str]:
    """CLIP's byte-to-unicode table: 256 printable stand-ins, one per byte."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    return [chr(c) for c in bs + [256 + k for k in range(256 - len(bs))]]


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    """A few-kB SDXL inpainting pipeline saved with ``save_pretrained``."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    tmp = tmp_path_factory.mktemp("sdxl")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, cross_attention_dim=64,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop ids + pooled text
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip
    chars = _byte_chars()
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=77)
    text = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, projection_dim=32, max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )  # fmt: skip
    pipe = StableDiffusionXLInpaintPipeline(
        vae=vae, unet=unet, text_encoder=CLIPTextModel(text),
        text_encoder_2=CLIPTextModelWithProjection(text), tokenizer=tokenizer,
        tokenizer_2=tokenizer, scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear"),
        requires_aesthetics_score=False,
    )  # fmt: skip
    pipe.save_pretrained(tmp / "pipe")
    return tmp / "pipe"


def test_sdxl_recipe_on_a_tiny_pipeline(tiny_sdxl, demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "aug"
    res = CliRunner().invoke(
        app, ["sdxl", "--weights", str(tiny_sdxl), "--dataset", "demo", "--data", str(demo_root),
              "--n-per-prompt", "1", "--out", str(out), "--steps", "2",
              "--gen-image-size", "64", "64", "--image-size", "80", "32"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "renamed" not in res.output
    assert "CPU" in res.output  # the warning about time without CUDA
    rows = read_manifest(out)
    assert len(rows) == 2  # one per reference prompt
    for r in rows:
        image, mask = read_image(out / r.image), read_mask(out / r.mask)
        assert image.shape == (80, 32, 3) and mask.any()
        source = resize_image(read_image(r.source_image), (80, 32))
        assert np.array_equal(image[~mask], source[~mask])
        assert len(r.model_sha256) == 64


def test_sdxl_missing_weights_is_one_clear_error(demo_root, tmp_path):
    for weights in (tmp_path / "absent", tmp_path):
        res = CliRunner().invoke(
            app, ["sdxl", "--weights", str(weights), "--dataset", "demo", "--data",
                  str(demo_root), "--n-per-prompt", "1", "--out", str(tmp_path / "o")],
        )  # fmt: skip
        assert res.exit_code == 1
        lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and str(weights) in lines[0], res.output


def test_sdxl_as_crops_equals_the_crops_of_its_images(tiny_sdxl, demo_root, tmp_path, monkeypatch):
    from dualpatch.augment import load_augmented
    from dualpatch.data.crop_reader import read_crop_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the old width-first flags, still read (H W = 80 32, as in the test above)
    args = ["sdxl", "--weights", str(tiny_sdxl), "--dataset", "demo", "--data", str(demo_root),
            "--n-per-prompt", "1", "--steps", "2", "--gen-size", "64", "64",
            "--size", "32", "80"]  # fmt: skip
    images, crops = tmp_path / "images", tmp_path / "crops"
    res = CliRunner().invoke(app, [*args, "--out", str(images)])
    assert res.exit_code == 0, res.output
    assert "warning: option: --size W H is renamed --image-size H W" in res.output
    assert "read as --image-size 80 32" in res.output
    res = CliRunner().invoke(
        app, [*args, "--out", str(crops), "--as-crops", "--crop-size", "80", "32"]
    )
    assert res.exit_code == 0, res.output
    assert "defect crops" in res.output
    got, expected = read_crop_folder(crops), load_augmented([images], (80, 32))
    assert len(got) == len(expected) >= 2
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected, strict=True))
