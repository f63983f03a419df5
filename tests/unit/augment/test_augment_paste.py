"""Copy-paste baseline and the shared folder contract: manifest reading and ``load_augmented``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dualpatch.augment import load_augmented, read_manifest
from dualpatch.augment.paste import generate_paste
from dualpatch.cli.augment import app
from dualpatch.data import KolektorSDD, read_image, read_mask
from dualpatch.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def pasted(demo_train, tmp_path_factory):
    out = tmp_path_factory.mktemp("paste") / "aug"
    generate_paste(demo_train, 4, out, seed=3, progress=False)
    return out


def test_paste_keeps_the_source_outside_the_mask(pasted, demo_train):
    rows = read_manifest(pasted)
    assert [r.seed for r in rows] == [3, 4, 5, 6]
    defect_masks = {str(s.mask_path) for s in demo_train.defective()}
    for r in rows:
        image, source = read_image(pasted / r.image), read_image(r.source_image)
        mask = read_mask(pasted / r.mask)
        assert image.shape == source.shape and mask.any()
        assert np.array_equal(image[~mask], source[~mask])
        assert not np.array_equal(image[mask], source[mask])  # a defect went in
        assert r.source_mask in defect_masks and r.model_sha256 == ""


def test_paste_is_deterministic(pasted, demo_train, tmp_path):
    generate_paste(demo_train, 2, tmp_path / "again", seed=3, progress=False)
    for r in read_manifest(tmp_path / "again"):
        assert (tmp_path / "again" / r.image).read_bytes() == (pasted / r.image).read_bytes()


def test_load_augmented_cuts_crops_at_the_model_size(pasted, tmp_path):
    crops = load_augmented([pasted], (160, 64))
    assert len(crops) >= 4
    for c in crops:
        assert c.image.shape[:2] == c.mask.shape and c.mask.any()
        y0, x0, y1, x1 = c.box
        assert 0 <= y0 < y1 <= 160 and 0 <= x0 < x1 <= 64
    assert len(load_augmented([pasted, pasted], (160, 64))) == 2 * len(crops)


def test_load_augmented_names_a_missing_file(pasted, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pasted, broken)
    (broken / "masks" / "00002.png").unlink()
    with pytest.raises(DataError) as err:
        load_augmented([pasted, broken], (160, 64))
    assert str(broken / "masks" / "00002.png") in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="manifest.csv: not found"):
        load_augmented([tmp_path], (160, 64))


def test_cli_paste(demo_root, tmp_path):
    res = CliRunner().invoke(
        app, ["paste", "--dataset", "demo", "--data", str(demo_root), "--n", "2",
              "--out", str(tmp_path / "p")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "wrote 2 images" in res.output
    res = CliRunner().invoke(
        app, ["paste", "--dataset", "folder", "--data", str(tmp_path / "nope"), "--n", "2",
              "--out", str(tmp_path / "q")],
    )  # fmt: skip
    assert res.exit_code == 1 and "error:" in res.output


def test_paste_on_kolektor_stays_gray_and_full_size(kolektor_root, tmp_path):
    data = KolektorSDD(kolektor_root, "train", train_items=range(1, 5))
    generate_paste(data, 2, tmp_path / "k", progress=False)
    for r in read_manifest(tmp_path / "k"):
        out = Image.open(tmp_path / "k" / r.image)
        source = Image.open(r.source_image)
        assert out.mode == "L" and out.size == source.size
        mask = read_mask(tmp_path / "k" / r.mask)
        assert np.array_equal(np.asarray(out)[~mask], np.asarray(source)[~mask])


def test_paste_defaults_place_on_the_part_unflipped_and_say_so(pasted):
    for r in read_manifest(pasted):
        assert r.placement.startswith("near training defect")
        assert r.placement.endswith("scale 1-1, no flips")


def test_paste_source_placement_with_jitter_still_there(demo_train, tmp_path, pasted):
    rows = generate_paste(demo_train, 2, tmp_path / "old", seed=3, progress=False,
                          placement="source", flip=True, scale=(0.8, 1.2))  # fmt: skip
    assert all(r.placement.startswith("source defect's own position") for r in rows)
    assert all(r.placement.endswith("scale 0.8-1.2, flipped at random") for r in rows)
    assert (tmp_path / "old" / rows[0].image).read_bytes() != (pasted / rows[0].image).read_bytes()
    with pytest.raises(ConfigError, match="unknown placement 'middle'"):
        generate_paste(demo_train, 1, tmp_path / "bad", placement="middle", progress=False)
