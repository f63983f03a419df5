"""Your own images in plain folders: good ones, defective ones, and masks for some defects.

Layout (anomalib's ``Folder(normal_dir, abnormal_dir, mask_dir)``), every folder relative to the
dataset root unless given as an absolute path::

    photos/good/        defect-free images (sub-folders allowed: cam1/, cam2/, ...)
    photos/defective/   defective images
    photos/masks/       optional: a mask per defective image, paired by stem

Any file names (spaces included) and any image sizes. A mask pairs with the defective image of the
same stem, with or without a ``_mask``, ``_GT`` or ``_label`` suffix (``scratch 1.jpg`` ->
``scratch 1_mask.png``), at the same sub-folder or, when unique, anywhere under the mask folder. A
defective image without a mask is kept: it counts for image metrics, thresholds and
``--bank single``; the dual bank's defect patches come from the masked ones only (or from crops).
JPEG masks are thresholded at half range (compression blurs 0/255), with one warning.

The train/test split is made here, seeded and stratified (good, masked defect, unmasked defect),
with byte-identical copies kept on one side. A root in the MVTec layout (``train/good``) keeps its
own split: ``open_folder`` reads it with ``MVTecFolder``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.data.base import Dataset, Sample
from dualpatch.data.images import IMAGE_SUFFIXES
from dualpatch.errors import DataError

#: mask file stems that pair with an image stem, tried in this order ("" = the same stem)
MASK_SUFFIXES = ("_mask", "_GT", "_label", "")
#: the default sub-folders of the root
DEFAULT_DIRS = {"good_dir": "good", "defective_dir": "defective", "mask_dir": "masks"}
SPLITS = ("train", "test")
JPEG = (".jpg", ".jpeg")


@dataclass(frozen=True)
class FolderLayout:
    """Where a plain folder dataset's images are, and how its split is drawn."""

    good_dir: str | None = None
    defective_dir: str | None = None
    mask_dir: str | None = None
    test_fraction: float = 0.2
    split_seed: int = 0

    @property
    def named(self) -> bool:
        """True when a folder was named (then the root is never read as MVTec)."""
        return any(getattr(self, k) is not None for k in DEFAULT_DIRS)

    def folder(self, root: Path, key: str) -> Path:
        given = getattr(self, key)
        return root / (DEFAULT_DIRS[key] if given is None else os.path.expanduser(given))


#: the run spec's settings that shape a folder dataset (``dualpatch.spec``)
LAYOUT_KEYS = (*DEFAULT_DIRS, "test_fraction", "split_seed")


def layout_of(settings: dict[str, Any]) -> FolderLayout:
    """The ``FolderLayout`` of a command's or a config's settings (missing keys: defaults)."""
    return FolderLayout(**{k: settings[k] for k in LAYOUT_KEYS if settings.get(k) is not None})


def open_folder(root: str | os.PathLike[str], split: str = "train",
                layout: FolderLayout | None = None) -> Dataset:  # fmt: skip
    """The ``folder`` dataset: MVTec layout when ``root`` has ``train/good`` and no folder was
    named, else good/defective/masks folders split here."""
    from dualpatch.data.mvtec import MVTecFolder

    root, layout = Path(root), layout or FolderLayout()
    _check_root(root)
    if not layout.named and (root / "train" / "good").is_dir():
        return MVTecFolder(root, split)
    return ImageFolder(root, split, layout)


def _check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: is a file, not a dataset folder")
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")


class ImageFolder(Dataset):
    """Good and defective images from two folders (masks optional), split by ``layout``."""

    name = "folder"

    def __init__(self, root: str | os.PathLike[str], split: str = "train",
                 layout: FolderLayout | None = None):  # fmt: skip
        root, layout = Path(root), layout or FolderLayout()
        if split not in SPLITS:
            raise DataError(f"{root}: unknown split {split!r} (use train or test)")
        if not 0 < layout.test_fraction < 1:
            raise DataError(f"{root}: test_fraction is {layout.test_fraction}; expected 0 to 1")
        samples = read_samples(root, layout)
        test = split_test(samples, layout.test_fraction, layout.split_seed)
        self.split, self.layout = split, layout
        chosen = [s for i, s in enumerate(samples) if (i in test) == (split == "test")]
        super().__init__(chosen, root)


def read_samples(root: Path, layout: FolderLayout) -> list[Sample]:
    """Every good and defective image under ``root`` (ids ``good/<path>``, ``defective/<path>``),
    masks paired (``pair_masks``)."""
    good_dir = layout.folder(root, "good_dir")
    defective_dir = layout.folder(root, "defective_dir")
    if not good_dir.is_dir() and layout.good_dir is None:
        inside = [p for p in sorted(root.iterdir()) if (p / "train" / "good").is_dir()
                  or (p / "good").is_dir()]  # fmt: skip
        extra = f"; did you mean {inside[0]}?" if inside else "; name them with --good-dir"
        raise DataError(f"{root}: no good/ folder of good images and not an MVTec-style folder "
                        f"(no train/good/){extra}")  # fmt: skip
    if not good_dir.is_dir():
        raise DataError(f"{good_dir}: folder of good images not found")
    good = _images(good_dir)
    if not good:
        raise DataError(f"{good_dir}: no images ({'/'.join(IMAGE_SUFFIXES)})")
    defective = _images(defective_dir) if defective_dir.is_dir() else []
    if layout.defective_dir is not None and not defective_dir.is_dir():
        raise DataError(f"{defective_dir}: folder of defective images not found")
    masks = pair_masks(defective_dir, defective, layout.folder(root, "mask_dir"))
    samples = [Sample(f"good/{_rel(p, good_dir)}", p, None, 0) for p in good]
    for p in defective:
        mask = masks.get(p)
        mode = "threshold" if mask is not None and mask.suffix.lower() in JPEG else "warn"
        samples.append(Sample(f"defective/{_rel(p, defective_dir)}", p, mask, 1, mode))
    unmasked = [p for p in defective if p not in masks]
    if unmasked:
        warnings.warn(f"{defective_dir}: {len(unmasked)} of {len(defective)} defective images "
                      f"have no mask (e.g. {unmasked[0].name}); used for image metrics and "
                      "thresholds, not for the defect bank", stacklevel=3)  # fmt: skip
    return samples


def _images(folder: Path) -> list[Path]:
    """Image files under ``folder``, sub-folders included, in a fixed order (hidden ones left)."""
    found = [
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]  # fmt: skip
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _rel(path: Path, folder: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def _mask_key(mask: Path, folder: Path) -> tuple[str, str]:
    """(sub-folder, image stem) a mask file stands for: its stem less a known mask suffix."""
    stem = mask.stem
    for suffix in MASK_SUFFIXES[:-1]:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    return mask.parent.relative_to(folder).as_posix(), stem


def pair_masks(image_dir: Path, images: list[Path], mask_dir: Path) -> dict[Path, Path]:
    """Each defective image's mask, by stem: the same sub-folder first, else the one mask of that
    stem anywhere under ``mask_dir``. Two masks for one image are an error; masks for no image
    and JPEG masks give one warning each (with a count)."""
    if not mask_dir.is_dir() or not images:
        return {}
    by_key: dict[tuple[str, str], list[Path]] = {}
    for m in _images(mask_dir):
        by_key.setdefault(_mask_key(m, mask_dir), []).append(m)
    by_stem: dict[str, list[Path]] = {}
    for (_, stem), found in by_key.items():
        by_stem.setdefault(stem, []).extend(found)
    paired: dict[Path, Path] = {}
    for p in images:
        here = by_key.get((p.parent.relative_to(image_dir).as_posix(), p.stem), [])
        found = here or by_stem.get(p.stem, [])
        if len(found) > 1:
            names = ", ".join(str(m) for m in found[:3])
            raise DataError(f"{p}: more than one mask pairs with this image ({names}); keep one")
        if found:
            paired[p] = found[0]
    _warn_masks(mask_dir, by_key, set(paired.values()))
    return paired


def _warn_masks(mask_dir: Path, by_key: dict, used: set[Path]) -> None:
    every = [m for found in by_key.values() for m in found]
    orphans = sorted(m for m in every if m not in used)
    if orphans:
        names = ", ".join(m.name for m in orphans[:3]) + (", ..." if len(orphans) > 3 else "")
        warnings.warn(f"{mask_dir}: {len(orphans)} mask(s) pair with no defective image; "
                      f"skipped ({names})", stacklevel=4)  # fmt: skip
    jpeg = [m for m in used if m.suffix.lower() in JPEG]
    if jpeg:
        warnings.warn(f"{mask_dir}: {len(jpeg)} JPEG mask(s) thresholded at half range "
                      "(JPEG blurs 0/255; PNG masks are exact)", stacklevel=4)  # fmt: skip


def split_test(samples: list[Sample], fraction: float, seed: int) -> set[int]:
    """Indices of the test images: ``fraction`` of each stratum (good, masked defect, unmasked
    defect), drawn by ``seed``; byte-identical images form one group and stay on one side.

    Each stratum that has two groups or more gives at least one to test, and keeps at least one
    for training; the good stratum always keeps one for the normal bank."""
    from dualpatch.fileio import sha256_file as file_sha256

    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(file_sha256(s.image_path), []).append(i)
    strata: dict[int, list[list[int]]] = {}
    for members in groups.values():
        stratum = max(_stratum(samples[i]) for i in members)
        strata.setdefault(stratum, []).append(members)
    rng = np.random.default_rng(seed)
    test: set[int] = set()
    for stratum in sorted(strata):
        members = strata[stratum]
        n = len(members)
        k = min(max(int(round(fraction * n)), 1), n - 1) if n >= 2 else 0
        for j in rng.permutation(n)[:k]:
            test.update(members[j])
    return test


def _stratum(sample: Sample) -> int:
    return 0 if sample.label == 0 else (1 if sample.mask_path is not None else 2)
