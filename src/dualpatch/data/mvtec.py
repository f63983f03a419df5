"""MVTec-AD style folders: ``train/good``, ``test/<type>``, ``ground_truth/<type>``."""

from __future__ import annotations

import warnings
from pathlib import Path

from dualpatch.data.base import Dataset, MissingSplit, Sample
from dualpatch.data.images import IMAGE_SUFFIXES, list_images
from dualpatch.errors import DataError

MASK_SUFFIXES = ("_mask", "_GT", "_label", "")
SPLITS = ("train", "test")


class MVTecFolder(Dataset):
    """A category folder in MVTec layout.

    ``train/good`` feeds the normal bank. Defective training images (``train/<type>`` with masks in
    ``ground_truth/<type>``) feed the defect bank when present. ``test/`` may hold ``good`` and any
    defect types; it is needed by ``evaluate``, not by ``fit``.

    Mask pairing rule: the mask of ``<split>/<type>/<name>.<ext>`` is ``<name>`` + one of
    ``_mask``, ``_GT``, ``_label`` or nothing, in ``ground_truth/<split>/<type>/`` when that folder
    exists, else in ``ground_truth/<type>/``. MVTec numbers each folder from 000, so a shared
    ``ground_truth/<type>/000_mask.png`` that both ``train/<type>/000`` and ``test/<type>/000``
    would take is refused: give each split its own ``ground_truth/<split>/<type>/``. A defective
    image without a mask is kept (image metrics, thresholds, ``--bank single``), with one warning
    per split; a mask without an image is skipped with a warning.
    """

    name = "folder"

    def __init__(self, root: str | Path, split: str = "train"):
        root = Path(root)
        if split not in SPLITS:
            raise DataError(f"{root}: unknown split {split!r} (use train or test)")
        if root.exists() and not root.is_dir():
            raise DataError(f"{root}: is a file, not a dataset folder")
        if not root.is_dir():
            raise DataError(f"{root}: folder not found")
        split_dir = root / split
        if not (root / "train" / "good").is_dir():
            hint = [p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()]
            extra = f"; did you mean {root / hint[0]}?" if hint else ""
            raise DataError(f"{root}: not an MVTec-style folder (no train/good/){extra}")
        if not split_dir.is_dir():
            raise MissingSplit(f"{root}: no {split}/ folder (evaluate needs test/<type>/ images)")
        samples: list[Sample] = []
        unmasked: list[Path] = []
        for type_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            images = list_images(type_dir)
            if type_dir.name == "good":
                samples += [Sample(f"{split}/good/{p.stem}", p, None, 0) for p in images]
                continue
            shared = _shared_stems(root, split, type_dir.name)
            for p in images:
                mask = _mask_of(root, split, type_dir.name, p, shared)
                unmasked += [p] if mask is None else []
                samples.append(Sample(f"{split}/{type_dir.name}/{p.stem}", p, mask, 1))
            _warn_orphans(root, type_dir.name)
        if not any(s.label == 0 for s in samples) and split == "train":
            raise DataError(
                f"{split_dir / 'good'}: folder is empty (no {'/'.join(IMAGE_SUFFIXES)})"
            )
        if unmasked:
            warnings.warn(
                f"{unmasked[0]}: defective image has no mask"
                + (f" (and {len(unmasked) - 1} more in {split}/)" if len(unmasked) > 1 else "")
                + "; used for image metrics and thresholds, not for the defect bank",
                stacklevel=2,
            )
        self.split = split
        super().__init__(samples, root)


def _mask_folder(root: Path, split: str, type_name: str) -> Path:
    """``ground_truth/<split>/<type>`` when it exists, else the shared ``ground_truth/<type>``."""
    own = root / "ground_truth" / split / type_name
    return own if own.is_dir() else root / "ground_truth" / type_name


def _candidates(gt_dir: Path, stem: str) -> list[Path]:
    found = []
    for suffix in MASK_SUFFIXES:
        found += [gt_dir / f"{stem}{suffix}{ext}" for ext in IMAGE_SUFFIXES]
    return [m for m in found if m.is_file()]


def _shared_stems(root: Path, split: str, type_name: str) -> dict[str, Path]:
    """Images of the other split's ``<type>`` folder that take their masks from the same folder
    as this split's, by stem."""
    other_split = "test" if split == "train" else "train"
    other_dir = root / other_split / type_name
    if not other_dir.is_dir() or _mask_folder(root, other_split, type_name) != _mask_folder(
        root, split, type_name
    ):
        return {}
    return {p.stem: p for p in list_images(other_dir)}


def _mask_of(root: Path, split: str, type_name: str, image: Path,
             shared: dict[str, Path]) -> Path | None:  # fmt: skip
    """The mask of ``image`` by the pairing rule (see ``MVTecFolder``); None when it has none.
    ``shared``: the other split's images that read the same mask folder (``_shared_stems``)."""
    gt_dir = _mask_folder(root, split, type_name)
    found = _candidates(gt_dir, image.stem)
    if not found:
        return None
    if image.stem in shared:
        other_split = "test" if split == "train" else "train"
        raise DataError(
            f"{found[0]}: mask would pair with both {image} and {shared[image.stem]}; put each "
            f"split's masks in ground_truth/{split}/{type_name}/ and "
            f"ground_truth/{other_split}/{type_name}/"
        )
    return found[0]


def _warn_orphans(root: Path, type_name: str) -> None:
    """Warn about masks in ``ground_truth/<type>`` that belong to no image of either split.

    ``train/<type>`` and ``test/<type>`` share one mask folder, so a mask is only an orphan when
    neither split holds its image.
    """
    gt_dir = root / "ground_truth" / type_name
    if not gt_dir.is_dir():
        return
    used = set()
    for split in SPLITS:
        other = root / split / type_name
        if other.is_dir() and _mask_folder(root, split, type_name) == gt_dir:
            for p in list_images(other):
                used |= {p.stem + s for s in MASK_SUFFIXES}
    orphans = [m for m in list_images(gt_dir) if m.stem not in used]
    if len(orphans) == 1:
        warnings.warn(f"{orphans[0]}: mask has no image; skipped", stacklevel=3)
    elif orphans:
        names = ", ".join(m.name for m in orphans[:3]) + (", ..." if len(orphans) > 3 else "")
        warnings.warn(
            f"{gt_dir}: {len(orphans)} masks have no image; skipped ({names})", stacklevel=3
        )
