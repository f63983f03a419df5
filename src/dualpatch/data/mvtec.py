"""MVTec-AD style folders: ``train/good``, ``test/<type>``, ``ground_truth/<type>``."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import DataError
from .base import Dataset, Sample
from .images import IMAGE_SUFFIXES, list_images

MASK_SUFFIXES = ("_mask", "_GT", "")


class MVTecFolder(Dataset):
    """A category folder in MVTec layout.

    ``train/good`` feeds the normal bank. Defective training images (``train/<type>`` with masks in
    ``ground_truth/<type>``) feed the defect bank when present. Masks may be named ``<stem>_mask``
    (MVTec) or exactly like the image. A mask without an image is skipped with a warning.
    """

    name = "folder"

    def __init__(self, root: str | Path, split: str = "train"):
        root = Path(root)
        if split not in ("train", "test"):
            raise DataError(f"{root}: unknown split {split!r} (use train or test)")
        if root.exists() and not root.is_dir():
            raise DataError(f"{root}: is a file, not a dataset folder")
        if not root.is_dir():
            raise DataError(f"{root}: folder not found")
        split_dir = root / split
        if not (split_dir / "good").is_dir():
            hint = [p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()]
            extra = f"; did you mean {root / hint[0]}?" if hint else ""
            raise DataError(f"{root}: not an MVTec-style folder (no {split}/good/){extra}")
        samples: list[Sample] = []
        for type_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            images = list_images(type_dir)
            gt_dir = root / "ground_truth" / type_dir.name
            if type_dir.name == "good":
                samples += [Sample(f"{split}/good/{p.stem}", p, None, 0) for p in images]
                continue
            masks = {m.stem: m for m in list_images(gt_dir)} if gt_dir.is_dir() else {}
            used = set()
            for p in images:
                mask = next((masks[p.stem + s] for s in MASK_SUFFIXES if p.stem + s in masks), None)
                if mask is None:
                    raise DataError(f"{p}: defective image has no mask in {gt_dir}")
                used.add(mask.stem)
                samples.append(Sample(f"{split}/{type_dir.name}/{p.stem}", p, mask, 1))
            _warn_orphans(root, type_dir.name, masks, used)
        if not any(s.label == 0 for s in samples) and split == "train":
            raise DataError(
                f"{split_dir / 'good'}: folder is empty (no {'/'.join(IMAGE_SUFFIXES)})"
            )
        self.split = split
        super().__init__(samples, root)


def _warn_orphans(root: Path, type_name: str, masks: dict[str, Path], used: set[str]) -> None:
    """Warn about masks in ``ground_truth/<type>`` that belong to no image of either split.

    ``train/<type>`` and ``test/<type>`` share one mask folder, so a mask is only an orphan when
    neither split holds its image.
    """
    for split in ("train", "test"):
        other = root / split / type_name
        if other.is_dir():
            for p in list_images(other):
                used |= {p.stem + s for s in MASK_SUFFIXES}
    orphans = [m for stem, m in sorted(masks.items()) if stem not in used]
    if len(orphans) == 1:
        warnings.warn(f"{orphans[0]}: mask has no image; skipped", stacklevel=3)
    elif orphans:
        names = ", ".join(m.name for m in orphans[:3]) + (", ..." if len(orphans) > 3 else "")
        gt_dir = orphans[0].parent
        warnings.warn(
            f"{gt_dir}: {len(orphans)} masks have no image; skipped ({names})", stacklevel=3
        )
