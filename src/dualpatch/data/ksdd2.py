"""KolektorSDD2 layout: ``train/`` and ``test/`` holding ``NNNNN.png`` with ``NNNNN_GT.png``."""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import Dataset, Sample
from .images import read_mask

STRAY_DUPLICATE = re.compile(r".* \(copy\)$")


class KolektorSDD2(Dataset):
    """KSDD2 split (``train`` or ``test``), raw or prepared; labels come from the masks.

    A prepared folder's ``<split>.csv`` (``path,label``) gives labels without reading any mask.
    """

    name = "ksdd2"

    def __init__(self, root: str | Path, split: str = "train"):
        root = Path(root)
        if split not in ("train", "test"):
            raise DataError(f"{root}: unknown split {split!r} (use train or test)")
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"{root}: not a KSDD2 folder (no {split}/ with NNNNN.png + NNNNN_GT.png)")
        labels = _csv_labels(root / f"{split}.csv")
        samples = []
        files = sorted(split_dir.iterdir())
        stems = {p.stem for p in files if p.suffix.lower() == ".png"}
        for p in files:
            if p.suffix.lower() != ".png" or STRAY_DUPLICATE.match(p.stem):
                continue
            if p.stem.endswith("_GT"):
                if p.stem[:-3] not in stems:
                    warnings.warn(f"{p}: mask has no image; skipped", stacklevel=2)
                continue
            mask = split_dir / f"{p.stem}_GT.png"
            if not mask.exists():
                raise DataError(f"{p}: no mask {mask.name} beside it")
            key = f"{split}/{p.name}"
            label = labels[key] if key in labels else int(np.any(read_mask(mask)))
            samples.append(Sample(f"{split}/{p.stem}", p, mask, label))
        if not samples:
            raise DataError(f"{split_dir}: folder holds no NNNNN.png images")
        self.split = split
        super().__init__(samples, root)


def _csv_labels(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {row["path"]: int(row["label"] == "positive") for row in csv.DictReader(f)}
