"""KolektorSDD2 layout: ``train/`` and ``test/`` holding ``NNNNN.png`` with ``NNNNN_GT.png``."""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualpatch.data.base import Dataset, Sample
from dualpatch.data.images import read_mask
from dualpatch.errors import DataError

SPLITS = ("train", "test")
#: official counts (images, positives); the archive also holds one stray "(copy)" pair in train/
EXPECTED_COUNTS = {"train": (2331, 246), "test": (1004, 110)}
LABELS = ("negative", "positive")  # CSV label names, by index
STRAY_DUPLICATE = re.compile(r".* \(copy\)$")
# Junk that zip tools add beside the data; never part of the dataset.
IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db"}


@dataclass
class SplitFiles:
    """What one split folder holds: image/mask pairs by stem, and everything that does not fit."""

    pairs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    copies: list[Path] = field(default_factory=list)  # the "(copy)" duplicates, dropped
    images_without_mask: list[Path] = field(default_factory=list)
    masks_without_image: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)  # anything not NNNNN(.png|_GT.png)


def scan_split(split_dir: Path) -> SplitFiles:
    """Sort the files of ``split_dir`` into image/mask pairs, stray copies and leftovers."""
    out = SplitFiles()
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(split_dir.iterdir()):
        if p.name in IGNORED_NAMES or p.name.startswith("._"):
            continue
        if p.suffix.lower() == ".png" and STRAY_DUPLICATE.match(p.stem):
            out.copies.append(p)
        elif p.is_file() and p.suffix.lower() == ".png" and p.stem.endswith("_GT"):
            masks[p.stem[:-3]] = p
        elif p.is_file() and p.suffix.lower() == ".png":
            images[p.stem] = p
        else:
            out.other.append(p)
    for stem, img in images.items():
        if stem in masks:
            out.pairs[stem] = (img, masks[stem])
        else:
            out.images_without_mask.append(img)
    out.masks_without_image = [m for s, m in masks.items() if s not in images]
    return out


def unpaired(files: SplitFiles) -> list[tuple[str, int, str]]:
    """What a split folder holds besides image/mask pairs: (kind, how many, the first names)."""
    out = []
    for what, paths in (
        ("images without a _GT mask", files.images_without_mask),
        ("masks without an image", files.masks_without_image),
        ("unexpected files", files.other),
    ):
        if paths:
            names = ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
            out.append((what, len(paths), names))
    return out


def find_root(folder: Path) -> Path:
    """``folder`` itself, or its single sub-folder, whichever holds ``train/`` and ``test/``.

    The zip may carry the splits at top level or inside one top folder.
    """
    if all((folder / s).is_dir() for s in SPLITS):
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and p.name not in IGNORED_NAMES]
    if len(subs) == 1 and all((subs[0] / s).is_dir() for s in SPLITS):
        return subs[0]
    raise DataError(f"{folder}: not a KSDD2 folder (expected train/ and test/ with NNNNN.png)")


def layout_warnings(root: Path, with_positives: bool = False) -> list[str]:
    """Compare ``root``'s train/ and test/ with the official file sets; one message per deviation.

    Positives need every mask read, so they are only counted when ``with_positives`` is set.
    """
    msgs = []
    for split in SPLITS:
        files = scan_split(root / split)
        n, n_pos = EXPECTED_COUNTS[split]
        if len(files.pairs) != n:
            msgs.append(f"{root / split}: {len(files.pairs):,} image/mask pairs, expected {n:,}")
        if with_positives:
            pos = sum(bool(np.any(read_mask(m, nonbinary="ok"))) for _, m in files.pairs.values())
            if pos != n_pos:
                msgs.append(f"{root / split}: {pos:,} positive images, expected {n_pos:,}")
        for what, count, names in unpaired(files):
            msgs.append(f"{root / split}: {count} {what} ({names})")
    return msgs


class KolektorSDD2(Dataset):
    """KSDD2 split (``train`` or ``test``), raw or prepared; labels come from the masks.

    Only paths are kept in memory. A prepared folder's ``<split>.csv`` (``path,label`` with
    ``positive``/``negative``) gives the labels without reading any mask; otherwise each mask is
    read once to label its image. The archive's stray ``(copy)`` duplicates are skipped.
    """

    name = "ksdd2"

    def __init__(self, root: str | Path, split: str = "train"):
        root = Path(root)
        if split not in SPLITS:
            raise DataError(f"{root}: unknown split {split!r} (use train or test)")
        split_dir = root / split
        if not split_dir.is_dir():
            hint = ""
            if root.is_dir():
                subs = [p for p in root.iterdir() if (p / split).is_dir()]
                hint = f"; did you mean {subs[0]}?" if subs else ""
            raise DataError(
                f"{root}: not a KSDD2 folder (no {split}/ with NNNNN.png + NNNNN_GT.png){hint}"
            )
        files = scan_split(split_dir)
        for m in files.masks_without_image:
            warnings.warn(f"{m}: mask has no image; skipped", stacklevel=2)
        if files.images_without_mask:
            img = files.images_without_mask[0]
            raise DataError(f"{img}: no mask {img.stem}_GT.png beside it")
        labels = _csv_labels(root / f"{split}.csv")
        samples = []
        for stem, (img, mask) in files.pairs.items():
            key = f"{split}/{img.name}"
            label = labels[key] if key in labels else int(np.any(read_mask(mask, nonbinary="ok")))
            samples.append(Sample(f"{split}/{stem}", img, mask, label))
        if not samples:
            raise DataError(f"{split_dir}: folder holds no NNNNN.png images")
        self.split = split
        super().__init__(samples, root)


def _csv_labels(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        labels = {r["path"]: LABELS.index(r["label"]) for r in rows}
    except (KeyError, ValueError, csv.Error, UnicodeDecodeError) as exc:
        msg = f"{path}: not a path,label CSV with negative/positive labels ({exc})"
        raise DataError(msg) from exc
    return labels
