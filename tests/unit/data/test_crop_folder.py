"""Defect crops as files: boxes around connected regions, crop folders, and the defect bank."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dualpatch import DualPatchCore
from dualpatch.data import KolektorSDD2
from dualpatch.data.crop_folder import CropSpec, write_training_crops
from dualpatch.data.crop_reader import (
    load_crop_folders,
    read_crop_folder,
    read_rows,
)
from dualpatch.data.crops import connected_regions, extract_defect_crops
from dualpatch.errors import DataError
from dualpatch.fileio import sha256_file
from tests.support.common import TINY, tiny_params


def two_region_mask() -> np.ndarray:
    """20x16 (HxW): region A is rows 2-4 x cols 3-5 (9 px); region B is rows 12-13 x cols 10-14
    plus (14, 15), touching B only diagonally, which 8-connectivity joins to it (11 px)."""
    mask = np.zeros((20, 16), dtype=bool)
    mask[2:5, 3:6] = True
    mask[12:14, 10:15] = True
    mask[14, 15] = True
    return mask


def test_two_regions_give_two_hand_computed_boxes():
    mask = two_region_mask()
    tight = connected_regions(mask)
    assert [r.box for r in tight] == [(2, 3, 5, 6), (12, 10, 15, 16)]
    assert [r.area for r in tight] == [9, 11]
    # padding 1, then grown to 6: A's 5x5 box grows one row down and one column right;
    # B's box is clipped at the right edge (x1 = 16), its 7-wide side already >= 6
    grown = connected_regions(mask, padding=1, min_size=6)
    assert [r.box for r in grown] == [(1, 2, 7, 8), (11, 9, 17, 16)]
    crops = extract_defect_crops(np.zeros((20, 16, 3), np.uint8), mask, padding=1, min_size=6)
    assert [c.box for c in crops] == [(1, 2, 7, 8), (11, 9, 17, 16)]
    assert [c.image.shape[:2] for c in crops] == [(6, 6), (6, 7)]


def test_a_crop_mask_holds_only_its_own_region():
    # a padding of 10 puts part of B in A's box: A's crop mask must still count A's pixels only
    a, b = connected_regions(two_region_mask(), padding=10)
    assert a.box == (0, 0, 15, 16) and a.mask[12:14, 10:15].any() == np.False_
    assert a.mask.sum() == a.area == 9 and b.mask.sum() == b.area == 11


def _hand_made_set(root):
    """KSDD2 layout with two normal images and one defective one carrying the two-region mask."""
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, mask in (("10000", None), ("10001", None), ("10002", two_region_mask())):
        image = rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "train" / f"{stem}.png")
        mask = np.zeros((20, 16), bool) if mask is None else mask
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "train" / f"{stem}_GT.png")
    return KolektorSDD2(root, "train")


def test_written_folder_lists_each_region_with_its_box(tmp_path):
    train = _hand_made_set(tmp_path / "set")
    spec = CropSpec(size=(20, 16), padding=1, min_size=6)
    rows = write_training_crops(train, tmp_path / "crops", spec, progress=False)
    assert len(rows) == 2
    with (tmp_path / "crops" / "crops.csv").open(newline="") as f:
        listed = list(csv.DictReader(f))
    boxes = [tuple(int(r[k]) for k in ("y0", "x0", "y1", "x1")) for r in listed]
    assert boxes == [(1, 2, 7, 8), (11, 9, 17, 16)]
    assert [int(r["defect_area"]) for r in listed] == [9, 11]
    assert {r["split"] for r in listed} == {"train"} and {r["origin"] for r in listed} == {"real"}
    assert all(r["source_image"].endswith("10002.png") for r in listed)
    source = np.asarray(Image.open(tmp_path / "set/train/10002.png"))
    for r, (y0, x0, y1, x1) in zip(listed, boxes, strict=True):
        crop = np.asarray(Image.open(tmp_path / "crops" / r["crop"]))
        assert np.array_equal(crop, source[y0:y1, x0:x1])
        mask = np.asarray(Image.open(tmp_path / "crops" / r["mask"])) > 0
        assert mask.sum() == int(r["defect_area"])
    # nothing left beside the folder: it was built in a temporary folder and renamed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops", "set"]


def test_folder_crops_equal_in_memory_crops_pixel_for_pixel(tmp_path, demo_train):
    write_training_crops(demo_train, tmp_path / "crops", CropSpec(TINY), progress=False)
    from_files = read_crop_folder(tmp_path / "crops")
    in_memory = demo_train.defect_crops(TINY)
    assert len(from_files) == len(in_memory) > len(demo_train.defective())
    for a, b in zip(from_files, in_memory, strict=True):
        assert a.image.dtype == b.image.dtype and np.array_equal(a.image, b.image)
        assert np.array_equal(a.mask, b.mask)


def test_a_model_from_the_folder_equals_one_from_crops_and_records_digests(
    tmp_path, demo_train, tiny_normal, tiny_test
):
    write_training_crops(demo_train, tmp_path / "crops", CropSpec(TINY), progress=False)
    from_files = DualPatchCore(**tiny_params()).fit(
        tiny_normal, load_crop_folders([tmp_path / "crops"])
    )
    in_memory = DualPatchCore(**tiny_params()).fit(tiny_normal, demo_train.defect_crops(TINY))
    assert torch.equal(from_files.defect_memory_.bank_, in_memory.defect_memory_.bank_)
    a, b = from_files.predict(tiny_test), in_memory.predict(tiny_test)
    assert np.array_equal(a.image_scores, b.image_scores)
    assert np.array_equal(a.anomaly_maps, b.anomaly_maps)
    from_files.save(tmp_path / "model")
    recorded = json.loads((tmp_path / "model" / "model.json").read_text())["defect_crop_files"]
    with (tmp_path / "crops" / "crops.csv").open(newline="") as f:
        listed = [r for r in csv.DictReader(f) if min(int(r["y1"]) - int(r["y0"]),
                                                    int(r["x1"]) - int(r["x0"])) >= 8]  # fmt: skip
    assert [r["sha256"] for r in recorded] == [
        sha256_file(tmp_path / "crops" / r["crop"]) for r in listed
    ]
    assert recorded[0]["mask_sha256"] == sha256_file(tmp_path / "crops" / listed[0]["mask"])
    assert DualPatchCore.load(tmp_path / "model").defect_crop_files_ == recorded


def test_only_folders_dualpatch_wrote_are_replaced_or_appended(tmp_path, demo_train):
    out = tmp_path / "crops"
    n = len(write_training_crops(demo_train, out, CropSpec(TINY), progress=False))
    with pytest.raises(DataError, match="already holds crops written by dualpatch"):
        write_training_crops(demo_train, out, CropSpec(TINY), progress=False)
    write_training_crops(demo_train, out, CropSpec(TINY, force=True), progress=False)
    assert len(read_crop_folder(out)) == n
    write_training_crops(demo_train, out, CropSpec(TINY, append=True), progress=False)
    assert len(read_crop_folder(out)) == 2 * n
    assert len(json.loads((out / "crops.json").read_text())["parts"]) == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for spec in (CropSpec(TINY), CropSpec(TINY, force=True), CropSpec(TINY, append=True)):
        with pytest.raises(DataError, match="not written by dualpatch"):
            write_training_crops(demo_train, foreign, spec, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def _crop(folder, name, size=(12, 10), value=100):
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(folder / name)


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "sub/../../outside.png"])
def test_a_csv_row_pointing_outside_the_folder_is_refused(tmp_path, bad):
    folder = tmp_path / "crops"
    folder.mkdir()
    _crop(folder, "a.png")
    _crop(tmp_path, "outside.png")
    (folder / "crops.csv").write_text(f"crop,mask\na.png,\n{bad},\n")
    with pytest.raises(DataError) as err:
        read_crop_folder(folder)
    message = str(err.value)
    assert str(folder / "crops.csv") in message and "row 2" in message
    assert "outside" in message and "\n" not in message


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "crops"
    folder.mkdir()
    _crop(tmp_path, "outside.png")
    (folder / "a.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(DataError, match="points outside"):
        read_crop_folder(folder)


def test_own_cut_outs_without_csv_or_masks_count_every_pixel(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    _crop(folder, "b.png", (12, 10))
    _crop(folder, "a.jpg", (9, 16))
    mask = np.zeros((12, 10), np.uint8)
    mask[3:5, 2:7] = 255
    Image.fromarray(mask).save(folder / "b_GT.png")  # the reference's crop-folder layout
    crops = read_crop_folder(folder)
    assert [c.source.rsplit("/", 1)[1] for c in crops] == ["a.jpg", "b.png"]
    assert crops[0].mask.all() and crops[0].mask.shape == (9, 16)
    assert crops[1].mask.sum() == 10
    # the same with a crops.csv that leaves the mask column empty
    (folder / "crops.csv").write_text("crop,mask\na.jpg,\n")
    only = read_crop_folder(folder)
    assert len(only) == 1 and only[0].mask.all()


def test_empty_or_missing_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="crops folder not found"):
        read_crop_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no crop images"):
        read_crop_folder(tmp_path / "empty")
    (tmp_path / "empty" / "crops.csv").write_text("image\nx.png\n")
    with pytest.raises(DataError, match="no 'crop' column"):
        read_crop_folder(tmp_path / "empty")


def test_a_folder_cut_at_another_scale_warns(tmp_path, demo_train):
    write_training_crops(demo_train, tmp_path / "crops", CropSpec(TINY), progress=False)
    with pytest.warns(UserWarning, match="cut at 64x32"):
        load_crop_folders([tmp_path / "crops"], (128, 64))


def test_paste_as_crops_equals_the_crops_of_the_paste_folder(tmp_path, demo_root):
    from dualpatch.augment import generate_paste, load_augmented
    from dualpatch.data import load_dataset

    train = load_dataset("demo", demo_root, "train")
    generate_paste(train, 3, tmp_path / "images", seed=5, progress=False)
    rows = generate_paste(train, 3, tmp_path / "crops", seed=5, progress=False,
                          as_crops=CropSpec(TINY))  # fmt: skip
    expected = load_augmented([tmp_path / "images"], TINY)
    got = read_crop_folder(tmp_path / "crops")
    assert len(rows) == len(got) == len(expected) >= 3
    for a, b in zip(got, expected, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert {r.origin for r in rows} == {"paste"}
    # appended to real crops: one folder holds both, real first
    real = tmp_path / "real"
    n_real = len(write_training_crops(train, real, CropSpec(TINY), progress=False))
    generate_paste(train, 3, real, seed=5, progress=False, as_crops=CropSpec(TINY, append=True))
    both = read_crop_folder(real)
    assert len(both) == n_real + len(got)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(both[n_real:], got, strict=True))


def test_append_checks_the_rows_it_carries_over(tmp_path, demo_train):
    out = tmp_path / "crops"
    write_training_crops(demo_train, out, CropSpec(TINY), progress=False)
    (tmp_path / "secret.png").write_bytes((out / read_rows(out)[0].crop).read_bytes())
    text = (out / "crops.csv").read_text().splitlines()
    first = text[1].split(",")
    text[2] = ",".join(["../secret.png", "", *first[2:]])  # a hand edit: row 2 points outside
    (out / "crops.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"crops.csv: row 2: '../secret.png' points outside"):
        write_training_crops(demo_train, out, CropSpec(TINY, append=True), progress=False)
    assert not any(p.name == "secret.png" for p in out.iterdir())
