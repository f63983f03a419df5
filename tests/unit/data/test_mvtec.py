"""MVTec-layout folders with defective TRAINING images, in BSData's exact layout:
``train/{good,pitting}``, ``test/{good,pitting}``, one ``ground_truth/pitting`` holding
``<name>_mask.png`` for train and test pitting images alike."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dualpatch.data import MVTecFolder, load_dataset
from dualpatch.experiment.protocol import pooled

NAME = "01_200828110055_{}_090_crop_2"


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def bsdata(tmp_path):
    rng = np.random.default_rng(0)
    rgb = lambda: rng.integers(0, 255, (46, 113, 3), dtype=np.uint8)  # noqa: E731
    layout = [("train", "good", "305000"), ("train", "good", "332500"),
              ("train", "pitting", "585000"), ("test", "good", "395000"),
              ("test", "pitting", "477500"), ("test", "pitting", "490000")]  # fmt: skip
    for split, kind, pos in layout:
        name = NAME.format(pos)
        write(tmp_path / split / kind / f"{name}.jpg", rgb())
        if kind == "pitting":
            mask = np.zeros((46, 113), np.uint8)
            mask[10:20, 30:45] = 255
            write(tmp_path / "ground_truth" / "pitting" / f"{name}_mask.png", mask)
    return tmp_path


def test_defective_training_images_come_with_their_masks(bsdata):
    train = MVTecFolder(bsdata, "train")
    assert sorted(s.id for s in train) == [
        f"train/good/{NAME.format('305000')}",
        f"train/good/{NAME.format('332500')}",
        f"train/pitting/{NAME.format('585000')}",
    ]
    (defect,) = train.defective()
    assert defect.label == 1 and defect.mask_path.name == f"{NAME.format('585000')}_mask.png"
    mask = defect.mask()
    assert mask.shape == (46, 113) and mask.sum() == 10 * 15 and mask[15, 40]
    assert len(train.normal()) == 2


def test_test_split_and_pooled_folds_read_the_shared_mask_folder(bsdata):
    test = load_dataset("folder", bsdata, "test")
    assert [s.label for s in test] == [0, 1, 1]
    assert all(s.mask().sum() == 150 for s in test.defective())
    both = pooled("folder", bsdata)
    assert len(both) == 6 and sum(s.label for s in both) == 3


def test_a_defective_training_image_without_its_mask_is_kept_with_a_warning(bsdata):
    # the folder loader's rule: kept for image metrics and thresholds, one warning per split
    (bsdata / "ground_truth" / "pitting" / f"{NAME.format('585000')}_mask.png").unlink()
    with pytest.warns(UserWarning):
        train = MVTecFolder(bsdata, "train")
    (defect,) = train.defective()
    assert defect.label == 1 and defect.mask_path is None
