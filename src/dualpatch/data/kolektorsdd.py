"""KolektorSDD (v1): ``kosNN/PartK.jpg`` with ``PartK_label.bmp`` (official) or ``.png``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from dualpatch.data.base import Dataset, Sample
from dualpatch.data.images import read_mask
from dualpatch.errors import DataError

#: kos01-kos33 train (their good images feed the normal bank, their defects the defect bank),
#: kos34-kos50 test.
DEFAULT_TRAIN_ITEMS = tuple(range(1, 34))
LABEL_SUFFIXES = ("_label.bmp", "_label.png")


class KolektorSDD(Dataset):
    """KolektorSDD v1 split by item folder (``kosNN``); ``train_items`` picks the training items."""

    name = "kolektorsdd"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        train_items: Iterable[int] = DEFAULT_TRAIN_ITEMS,
    ):
        root = Path(root)
        if split not in ("train", "test", "all"):
            raise DataError(f"{root}: unknown split {split!r} (use train, test or all)")
        if root.exists() and not root.is_dir():
            raise DataError(f"{root}: is a file, not a dataset folder")
        if not root.is_dir():
            raise DataError(f"{root}: folder not found")
        items = sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"kos\d+", p.name))
        if not items:
            raise DataError(
                f"{root}: not a KolektorSDD folder "
                "(expected kos01/ ... kos50/ with PartK.jpg files)"
            )
        train_items = set(train_items)
        samples = []
        for item in items:
            number = int(item.name[3:])
            if split != "all" and (number in train_items) != (split == "train"):
                continue
            samples.extend(_item_samples(item))
        self.split = split
        super().__init__(samples, root)


def _item_samples(item: Path) -> list[Sample]:
    samples = []
    images = sorted(
        (p for p in item.iterdir() if re.fullmatch(r"Part\d+\.(jpg|jpeg|png|bmp)", p.name, re.I)),
        key=lambda p: int(re.sub(r"\D", "", p.stem)),
    )
    stems = {p.stem for p in images}
    for p in item.iterdir():
        m = re.fullmatch(r"(Part\d+)_label\.(png|bmp)", p.name, re.I)
        if m and m.group(1) not in stems:
            warnings.warn(f"{p}: mask has no image; skipped", stacklevel=3)
    for img in images:
        mask_path = next(
            (item / f"{img.stem}{s}" for s in LABEL_SUFFIXES if (item / f"{img.stem}{s}").exists()),
            None,
        )
        if mask_path is None:
            raise DataError(f"{img}: no label file ({img.stem}_label.bmp or .png) beside it")
        label = int(np.any(read_mask(mask_path, nonbinary="ok")))  # 0/1/2 by design
        samples.append(Sample(f"{item.name}/{img.stem}", img, mask_path, label, "ok"))
    return samples
