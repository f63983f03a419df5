"""KSDD2 preparation (resize, CSV labels, copy pair, count warnings) and the KolektorSDD2 class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import dualpatch.data.ksdd2 as ksdd2_module
from dualpatch.cli.data import app
from dualpatch.data import KolektorSDD2
from dualpatch.data.prepare import prepare_ksdd2
from dualpatch.errors import DataError
from tests.support.ksdd2_fixture import COPY_PAIR, make_ksdd2_folder, make_ksdd2_zip

runner = CliRunner()
quiet = {"progress": False, "log": lambda s: None}


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A raw KSDD2-shaped folder and what it holds."""
    root = tmp_path_factory.mktemp("raw") / "KolektorSDD2"
    return root, make_ksdd2_folder(root, n_train=12, n_test=6, n_pos_train=3, n_pos_test=2)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "ksdd2_224"
    with pytest.warns(UserWarning):
        prepare_ksdd2(raw[0], out, **quiet)
    return out


def test_cli_prepare_from_zip(tmp_path):
    archive = make_ksdd2_zip(tmp_path / "ksdd2.zip", 6, 4, top_folder="KolektorSDD2")
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", "ksdd2", "--src", str(archive), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "dropped 2 stray duplicate(s)" in result.output and COPY_PAIR[0] in result.output
    assert "train: 6 images (4 positive), official KSDD2 has 2,331 (246 positive)" in result.output
    assert "test: 4 images (3 positive), official KSDD2 has 1,004 (110 positive)" in result.output
    names = sorted(p.name for p in (out / "train").iterdir())
    assert len(names) == 12 and not any("copy" in n for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ksdd2.zip", "prepared"]  # no temp


def test_csv_labels_and_sizes(raw, prepared):
    _, info = raw
    for split in ("train", "test"):
        rows = _rows(prepared / f"{split}.csv")
        assert list(rows[0]) == ["path", "label"]
        assert [r["path"] for r in rows] == [f"{split}/{s}.png" for s in info.stems[split]]
        expected = {f"{split}/{s}.png" for s in info.positives[split]}
        assert {r["path"] for r in rows if r["label"] == "positive"} == expected
        assert {r["label"] for r in rows} == {"positive", "negative"}
        for r in rows:
            image = Image.open(prepared / r["path"])
            mask = Image.open(prepared / r["path"].replace(".png", "_GT.png"))
            assert image.size == mask.size == (224, 632) and image.mode == "RGB"
            values = set(np.unique(np.asarray(mask)))
            assert values <= {0, 255} and (255 in values) == (r["label"] == "positive")
    meta = json.loads((prepared / "prepared.json").read_text())
    assert meta["image_size"] == [632, 224] and meta["size_wh"] == [224, 632]
    assert meta["dropped"] == [f"train/{n}" for n in COPY_PAIR]
    assert meta["counts"] == {"train": [12, 3], "test": [6, 2]}


def test_custom_size_and_no_warning_when_counts_match(raw, tmp_path, monkeypatch, recwarn):
    counts = {"train": (12, 3), "test": (6, 2)}
    monkeypatch.setattr("dualpatch.data.prepare.EXPECTED_COUNTS", counts)
    report = prepare_ksdd2(raw[0], tmp_path / "small", image_size=(316, 112), **quiet)
    assert report.warnings == [] and len(recwarn) == 0
    assert Image.open(tmp_path / "small" / "test" / "20000.png").size == (112, 316)


def test_tiny_defect_survives_resize(tmp_path):
    root = tmp_path / "raw"
    make_ksdd2_folder(root, 2, 2, 0, 0, with_copy_pair=False, size=(230, 630))
    mask_path = root / "test" / "20000_GT.png"
    mask = np.zeros(np.asarray(Image.open(mask_path)).shape, np.uint8)
    w = mask.shape[1]
    # a one-pixel defect in a column that nearest-neighbour resizing to 224 wide skips
    kept = {int((x + 0.5) * w / 224) for x in range(224)}
    mask[300, next(x for x in range(w) if x not in kept)] = 255
    Image.fromarray(mask).save(mask_path)
    with pytest.warns(UserWarning):
        prepare_ksdd2(root, tmp_path / "out", **quiet)
    rows = {r["path"]: r["label"] for r in _rows(tmp_path / "out" / "test.csv")}
    assert rows["test/20000.png"] == "positive"
    assert np.asarray(Image.open(tmp_path / "out" / "test" / "20000_GT.png")).any()


def test_bad_source_leaves_nothing(tmp_path):
    (tmp_path / "src" / "images").mkdir(parents=True)
    result = runner.invoke(
        app, ["prepare", "ksdd2", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "not a KSDD2 folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    with pytest.raises(DataError, match="must not be the source"):
        prepare_ksdd2(tmp_path / "src", tmp_path / "src", **quiet)
    unknown = runner.invoke(app, ["prepare", "mvtec", "--src", "x", "--out", "y"])
    assert unknown.exit_code != 0 and "unknown dataset" in unknown.output


def test_dataset_reads_labels_from_csv(prepared, monkeypatch):
    def no_mask_reads(*args, **kwargs):
        raise AssertionError("labels must come from the CSV")

    monkeypatch.setattr(ksdd2_module, "read_mask", no_mask_reads)
    train = KolektorSDD2(prepared, "train")
    assert len(train) == 12 and len(train.normal()) == 9 and len(train.defective()) == 3
    assert all(isinstance(s.image_path, Path) for s in train)  # only paths held
    assert train.labels.sum() == 3


def test_dataset_views_masks_and_crops(prepared):
    test = KolektorSDD2(prepared, "test")
    assert len(test) == 6 and [s.id for s in test][0] == "test/20000"
    defect = test.defective()[0]
    mask = defect.mask()
    assert mask.dtype == bool and mask.shape == (632, 224) and mask.any()
    assert defect.image((316, 112)).shape == (316, 112, 3)
    assert not test.normal()[0].mask().any()
    crops = test.defect_crops((632, 224))
    assert len(crops) == 2 and all(c.mask.dtype == bool and c.mask.any() for c in crops)
    assert {c.source for c in crops} == {s.id for s in test.defective()}


def test_dataset_on_raw_folder_skips_copies_and_binarises(raw, tmp_path):
    root, info = raw
    train = KolektorSDD2(root, "train")
    assert [s.id for s in train] == [f"train/{s}" for s in info.stems["train"]]
    assert {s.id for s in train.defective()} == {f"train/{s}" for s in info.positives["train"]}
    # a mask with 0/1 values (not 0/255) still marks the defect
    copy = tmp_path / "k"
    make_ksdd2_folder(copy, 2, 2, 0, 0, with_copy_pair=False)
    mask_path = copy / "test" / "20001_GT.png"
    mask = np.zeros(np.asarray(Image.open(mask_path)).shape, np.uint8)
    mask[100:140, 50:90] = 1
    Image.fromarray(mask).save(mask_path)
    test = KolektorSDD2(copy, "test")
    assert [s.id for s in test.defective()] == ["test/20001"]
    assert test.defective()[0].mask().sum() == 40 * 40


def test_dataset_errors(raw, tmp_path):
    root, _ = raw
    with pytest.raises(DataError, match="unknown split"):
        KolektorSDD2(root, "val")
    with pytest.raises(DataError, match="did you mean"):
        KolektorSDD2(root.parent, "train")
    bad = tmp_path / "bad"
    make_ksdd2_folder(bad, 2, 2, 0, 0, with_copy_pair=False)
    (bad / "train.csv").write_text("path,label\ntrain/10000.png,maybe\n")
    with pytest.raises(DataError, match=r"train\.csv: not a path,label CSV"):
        KolektorSDD2(bad, "train")
    (bad / "test" / "20000_GT.png").unlink()
    with pytest.raises(DataError, match=r"20000\.png: no mask 20000_GT\.png"):
        KolektorSDD2(bad, "test")
