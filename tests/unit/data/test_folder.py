"""The ``folder`` dataset: any names, optional masks, a seeded split that keeps copies together,
and the MVTec layout's mask pairing rule."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from dualpatch.data import (
    FolderLayout,
    ImageFolder,
    MVTecFolder,
    load_dataset,
    open_folder,
    split_validation,
)
from dualpatch.errors import DataError
from tests.support.bad_input import box_mask, make_folder, save, texture


def own_photos(root: Path, n_good: int = 10, masked: int = 4, unmasked: int = 2) -> Path:
    """good/ in two camera sub-folders, defective/ with spaces in names, masks for some (one a
    JPEG, suffixes _mask, _GT, _label and none), portrait and landscape sizes."""
    for i in range(n_good):
        shape = (64, 32) if i % 2 else (32, 64)
        save(root / f"good/cam{i % 2}/ok photo {i}.jpg", texture(i, *shape), quality=95)
    suffixes = ["_mask", "_GT", "_label", ""]
    for i in range(masked + unmasked):
        save(root / f"defective/bad part {i}.png", texture(100 + i))
        if i < masked:
            ext = ".jpg" if i == 0 else ".png"
            name = f"bad part {i}{suffixes[i % 4]}{ext}"
            save(root / "masks" / name, box_mask(), **({"quality": 90} if ext == ".jpg" else {}))
    return root


def test_reads_good_defective_and_optional_masks(tmp_path):
    root = own_photos(tmp_path / "photos")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, test = ImageFolder(root, "train"), ImageFolder(root, "test")
    everything = list(train) + list(test)
    assert len(everything) == 16 and sum(s.label for s in everything) == 6
    masked = {s.image_path.name: s.mask_path.name for s in everything if s.mask_path}
    assert masked == {
        "bad part 0.png": "bad part 0_mask.jpg",
        "bad part 1.png": "bad part 1_GT.png",
        "bad part 2.png": "bad part 2_label.png",
        "bad part 3.png": "bad part 3.png",
    }
    assert sum(not s.mask_known for s in everything) == 2
    # the JPEG mask is thresholded, not taken as "any non-zero" (JPEG noise would mark it all)
    jpeg = next(s for s in everything if s.mask_path and s.mask_path.suffix == ".jpg")
    assert np.array_equal(jpeg.mask(), box_mask() > 0)
    messages = [str(w.message) for w in caught]  # each split opened once
    assert sum("1 JPEG mask(s) thresholded" in m for m in messages) == 2
    assert sum("2 of 6 defective images have no mask" in m for m in messages) == 2
    assert len(messages) == 4
    assert all(s.id.startswith(("good/cam", "defective/bad part")) for s in everything)


def test_split_is_seeded_stratified_and_disjoint(tmp_path):
    root = own_photos(tmp_path / "photos")
    train, test = ImageFolder(root, "train"), ImageFolder(root, "test")
    assert not {s.id for s in train} & {s.id for s in test}
    # 10 good -> 2 test; 4 masked -> 1; 2 unmasked -> 1 (each stratum gives one, keeps one)
    assert sorted((s.label, s.mask_known) for s in test) == [
        (0, True),
        (0, True),
        (1, False),
        (1, True),
    ]
    again = ImageFolder(root, "test")
    assert [s.id for s in again] == [s.id for s in test]
    other = ImageFolder(root, "test", FolderLayout(split_seed=1))
    seeds = {
        tuple(s.id for s in ImageFolder(root, "test", FolderLayout(split_seed=k))) for k in range(6)
    }
    assert len(seeds) > 1 and len(other) == len(test)
    bigger = ImageFolder(root, "test", FolderLayout(test_fraction=0.5))
    assert len(bigger) == 5 + 2 + 1


def test_validation_part_is_drawn_apart_and_leaves_the_test_part_as_it_was(tmp_path):
    root = own_photos(tmp_path / "photos")
    train, test = ImageFolder(root, "train"), ImageFolder(root, "test")
    validation = ImageFolder(root, "validation")
    fit_on, part = split_validation(train)
    # the train split holds the validation part (run cross-validates on it); fit takes it out
    assert [s.id for s in part] == [s.id for s in validation]
    assert {s.id for s in fit_on} | {s.id for s in part} == {s.id for s in train}
    assert not {s.id for s in fit_on} & {s.id for s in part}
    assert not {s.id for s in train} & {s.id for s in test}
    # 10 good -> 2 test, 2 validation; 4 masked -> 1, 1; 2 unmasked -> 1 test, none to spare
    assert sorted((s.label, s.mask_known) for s in validation) == [(0, True), (0, True), (1, True)]
    assert {train.parts[s.id] for s in fit_on} == {"train"}
    # the test draw comes first: another validation fraction leaves it unchanged
    none = FolderLayout(validation_fraction=0)
    assert [s.id for s in ImageFolder(root, "test", none)] == [s.id for s in test]
    assert split_validation(ImageFolder(root, "train", none))[1] is None
    more = FolderLayout(validation_fraction=0.4)
    assert len(ImageFolder(root, "validation", more)) == 4 + 2
    assert [s.id for s in ImageFolder(root, "test", more)] == [s.id for s in test]
    # reproducible, and seeded
    assert [s.id for s in ImageFolder(root, "validation")] == [s.id for s in validation]
    seeds = {
        tuple(s.id for s in ImageFolder(root, "validation", FolderLayout(split_seed=k)))
        for k in range(6)
    }
    assert len(seeds) > 1
    with pytest.raises(DataError, match="validation_fraction is 0.8; expected 0 to below 1 - "):
        ImageFolder(root, "train", FolderLayout(validation_fraction=0.8))
    with pytest.raises(DataError, match="unknown split 'dev' \\(use train, validation, test\\)"):
        ImageFolder(root, "dev")
    # datasets without a validation part: fit holds normals out itself
    assert split_validation(MVTecFolder(make_folder(tmp_path / "mvtec"), "train"))[1] is None


def test_copies_stay_on_one_side(tmp_path):
    root = own_photos(tmp_path / "photos")
    for k in range(3):  # three copies of one good image under other names
        shutil.copy(root / "good/cam0/ok photo 0.jpg", root / f"good/cam1/copy {k}.jpg")
    for seed in range(8):
        layout = FolderLayout(split_seed=seed)
        parts = ImageFolder(root, "train", layout).parts
        sides = [
            {s.image_path.name for s in ImageFolder(root, split, layout)}
            for split in ("validation", "test")
        ]
        sides.append({s.image_path.name for s in ImageFolder(root, "train", layout)
                      if parts[s.id] == "train"})  # fmt: skip
        copies = {"ok photo 0.jpg", "copy 0.jpg", "copy 1.jpg", "copy 2.jpg"}
        assert any(copies <= side for side in sides)


def test_named_folders_and_errors(tmp_path):
    root = own_photos(tmp_path / "photos")
    (root / "good").rename(root / "ok")
    with pytest.raises(DataError, match="no good/ folder of good images and not an MVTec"):
        ImageFolder(root)
    layout = FolderLayout(good="ok", masks=str(root / "masks"))
    assert (
        len(load_dataset("folder", root, "train", layout))
        + len(load_dataset("folder", root, "test", layout))
        == 16
    )
    with pytest.raises(DataError, match="nope: folder of defective images not found"):
        ImageFolder(root, "train", FolderLayout(good="ok", defective="nope"))
    (root / "masks/bad part 1_mask.png").write_bytes(
        (root / "masks/bad part 1_GT.png").read_bytes()
    )
    with pytest.raises(DataError, match="bad part 1.png: more than one mask"):
        ImageFolder(root, "train", layout)


def test_orphan_masks_warn_once_with_a_count(tmp_path):
    root = own_photos(tmp_path / "photos")
    save(root / "masks/nothing here_mask.png", box_mask())
    with pytest.warns(UserWarning, match=r"1 mask\(s\) pair with no defective image.*nothing"):
        ImageFolder(root)


def test_mvtec_root_keeps_its_own_split(tmp_path):
    root = make_folder(tmp_path / "mvtec")
    assert isinstance(open_folder(root, "train"), MVTecFolder)
    assert [s.id for s in open_folder(root, "test")][:2] == ["test/crack/c0", "test/crack/c1"]


def test_mvtec_masks_pair_by_split_type_and_name(tmp_path):
    """train/crack/000 and test/crack/000 must not both take ground_truth/crack/000_mask.png."""
    root = make_folder(tmp_path / "mvtec")
    save(root / "train/crack/c0.png", texture(77))  # same name as test/crack/c0.png
    with pytest.raises(
        DataError,
        match=r"c0_mask.png: mask would pair with both .*train/crack/"
        r"c0.png and .*test/crack/c0.png",
    ):
        MVTecFolder(root, "train")
    # the rule's way out: each split its own ground_truth/<split>/<type>/
    for split in ("train", "test"):
        (root / "ground_truth" / split).mkdir()
    shutil.move(root / "ground_truth/crack", root / "ground_truth/test/crack")
    (root / "ground_truth/train/crack").mkdir()
    save(root / "ground_truth/train/crack/c0_mask.png", box_mask(value=255)[::-1].copy())
    shutil.copy(root / "ground_truth/test/crack/t0_mask.png", root / "ground_truth/train/crack")
    train = {s.id: s for s in MVTecFolder(root, "train")}
    test = {s.id: s for s in MVTecFolder(root, "test")}
    assert train["train/crack/c0"].mask_path.parent.name == "crack"
    assert "train" in train["train/crack/c0"].mask_path.parts
    assert "test" in test["test/crack/c0"].mask_path.parts


def test_mvtec_defect_without_mask_is_kept_with_one_warning(tmp_path):
    root = make_folder(tmp_path / "mvtec")
    (root / "ground_truth/crack/c0_mask.png").unlink()
    (root / "ground_truth/crack/c1_mask.png").unlink()
    with pytest.warns(UserWarning, match=r"c0.png: defective image has no mask \(and 1 more"):
        test = MVTecFolder(root, "test")
    assert [s.mask_known for s in test.defective()] == [False, False]


def test_mvtec_without_test_folder_is_a_missing_split(tmp_path):
    from dualpatch.data import MissingSplit

    root = make_folder(tmp_path / "mvtec")
    shutil.rmtree(root / "test")
    assert len(MVTecFolder(root, "train")) == 4
    with pytest.raises(MissingSplit, match="no test/ folder"):
        MVTecFolder(root, "test")
