"""KolektorSDD v1 loader on the real data beside the repository (skipped when it is absent)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from dualpatch.data import KolektorSDD, load_dataset
from dualpatch.errors import DataError
from tests.support.common import requires_kolektor


@pytest.fixture(scope="module")
def kolektor_train(kolektor_root):
    return KolektorSDD(kolektor_root, "train")


@requires_kolektor
def test_default_split_counts(kolektor_root, kolektor_train):
    test = load_dataset("kolektorsdd", kolektor_root, "test")
    assert len(kolektor_train) == 264
    assert (len(kolektor_train.normal()), len(kolektor_train.defective())) == (231, 33)
    assert len(test) == 136
    assert (len(test.normal()), len(test.defective())) == (117, 19)
    # the split is by item folder: kos01-kos33 train, kos34-kos50 test, no overlap
    train_items = {s.id.split("/")[0] for s in kolektor_train}
    test_items = {s.id.split("/")[0] for s in test}
    assert train_items == {f"kos{i:02d}" for i in range(1, 34)}
    assert test_items == {f"kos{i:02d}" for i in range(34, 51)}


@requires_kolektor
def test_custom_train_items(kolektor_root):
    train = KolektorSDD(kolektor_root, "train", train_items=[1, 2, 3])
    test = KolektorSDD(kolektor_root, "test", train_items=range(1, 50))
    assert len(train) == 24 and len(test) == 8
    assert {s.id[:5] for s in train} == {"kos01", "kos02", "kos03"}
    assert {s.id[:5] for s in test} == {"kos50"}


@requires_kolektor
def test_samples_are_ordered_and_readable(kolektor_train):
    first = kolektor_train[0]
    assert first.id == "kos01/Part0"
    item = [s.id for s in kolektor_train if s.id.startswith("kos01/")]
    assert item == [f"kos01/Part{k}" for k in range(8)]
    defect = kolektor_train.defective()[0]
    img = defect.image((320, 128))
    assert img.shape == (320, 128, 3) and img.dtype == np.uint8
    mask = defect.mask((320, 128))
    assert mask.dtype == bool and mask.any()
    assert not kolektor_train.normal()[0].mask((320, 128)).any()


@pytest.fixture
def one_item(kolektor_root, kolektor_train, tmp_path):
    """A copy of the first item that holds a defective image, as its own little dataset."""
    item = kolektor_train.defective()[0].id.split("/")[0]
    root = tmp_path / "ksdd"
    shutil.copytree(kolektor_root / item, root / item)
    return root, item


@requires_kolektor
def test_bmp_labels_are_accepted(one_item):
    root, item = one_item
    before = KolektorSDD(root, "all")
    masks = [s.mask() for s in before]
    for png in sorted((root / item).glob("*_label.png")):
        Image.open(png).save(png.with_suffix(".bmp"), format="BMP")
        png.unlink()
    after = KolektorSDD(root, "all")
    assert [s.id for s in after] == [s.id for s in before]
    assert [s.label for s in after] == [s.label for s in before]
    assert sum(s.label for s in after) >= 1
    assert all(s.mask_path.suffix == ".bmp" for s in after)
    for sample, mask in zip(after, masks, strict=True):
        np.testing.assert_array_equal(sample.mask(), mask)


@requires_kolektor
def test_missing_label_raises_naming_the_image(one_item):
    root, item = one_item
    (root / item / "Part3_label.png").unlink()
    with pytest.raises(DataError, match="label") as err:
        KolektorSDD(root, "all")
    assert str(root / item / "Part3.jpg") in str(err.value)


def test_not_a_kolektorsdd_folder(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        KolektorSDD(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="KolektorSDD") as err:
        KolektorSDD(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
