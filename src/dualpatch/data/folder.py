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
``--bank single``, and feeds the dual bank's defects by a pseudo-mask
(``models.defect_features``).
JPEG masks are thresholded at half range (compression blurs 0/255), with one warning.

The split is made here, seeded and stratified (good, masked defect, unmasked defect), with
byte-identical copies kept in one part: test (``test_fraction``), validation
(``validation_fraction``) and train. The ``train`` split holds the validation part, as an MVTec
``train/`` folder would (``run`` cross-validates on it); ``fit`` takes the validation part out
(``split_validation``) for the threshold's held-out normals and the validation image metrics. A
root in the MVTec layout (``train/good``) keeps its own split: ``open_folder`` reads it with
``MVTecFolder``.
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
DEFAULT_DIRS = {"good": "good", "defective": "defective", "masks": "masks"}
SPLITS = ("train", "validation", "test")
JPEG = (".jpg", ".jpeg")


@dataclass(frozen=True)
class FolderLayout:
    """Where a plain folder dataset's images are, and how its split is drawn."""

    good: str | None = None
    defective: str | None = None
    masks: str | None = None
    test_fraction: float = 0.2
    validation_fraction: float = 0.2
    split_seed: int = 0

    @property
    def named(self) -> bool:
        """True when a folder was named (then the root is never read as MVTec)."""
        return any(getattr(self, k) is not None for k in DEFAULT_DIRS)

    def folder(self, root: Path, key: str) -> Path:
        given = getattr(self, key)
        return root / (DEFAULT_DIRS[key] if given is None else os.path.expanduser(given))


#: the run spec's settings that shape a folder dataset (``dualpatch.spec``)
LAYOUT_KEYS = (*DEFAULT_DIRS, "test_fraction", "validation_fraction", "split_seed")


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
            raise DataError(f"{root}: unknown split {split!r} (use {', '.join(SPLITS)})")
        _check_fractions(root, layout)
        samples = read_samples(root, layout)
        parts = split_parts(samples, layout.test_fraction, layout.validation_fraction,
                            layout.split_seed)  # fmt: skip
        wanted = ("train", "validation") if split == "train" else (split,)
        self.split, self.layout = split, layout
        #: each sample's part: "train" or "validation" (the train split holds both) or "test"
        self.parts = {s.id: part for s, part in zip(samples, parts, strict=True) if part in wanted}
        super().__init__([s for s in samples if s.id in self.parts], root)


def _check_fractions(root: Path, layout: FolderLayout) -> None:
    test, validation = layout.test_fraction, layout.validation_fraction
    if not 0 < test < 1:
        raise DataError(f"{root}: test_fraction is {test}; expected 0 to 1")
    if not 0 <= validation < 1 or test + validation >= 1:
        raise DataError(f"{root}: validation_fraction is {validation}; expected 0 to below "
                        f"1 - test_fraction ({1 - test:g})")  # fmt: skip


def split_validation(train: Dataset) -> tuple[Dataset, Dataset | None]:
    """(what to fit on, the validation part) of a training split: a folder dataset's own
    validation part (``validation_fraction``), or None for a dataset without one (MVTec,
    KolektorSDD: ``fit`` then holds normals out by ``--threshold-holdout``)."""
    import copy

    parts = getattr(train, "parts", None)
    if not parts or "validation" not in parts.values():
        return train, None
    halves = []
    for part in ("train", "validation"):
        half = copy.copy(train)
        half.samples = [s for s in train if parts.get(s.id) == part]
        halves.append(half)
    return halves[0], halves[1]


def read_samples(root: Path, layout: FolderLayout) -> list[Sample]:
    """Every good and defective image under ``root`` (ids ``good/<path>``, ``defective/<path>``),
    masks paired (``pair_masks``)."""
    good_dir = layout.folder(root, "good")
    defective_dir = layout.folder(root, "defective")
    if not good_dir.is_dir() and layout.good is None:
        inside = [p for p in sorted(root.iterdir()) if (p / "train" / "good").is_dir()
                  or (p / "good").is_dir()]  # fmt: skip
        extra = f"; did you mean {inside[0]}?" if inside else "; name them with --good"
        raise DataError(f"{root}: no good/ folder of good images and not an MVTec-style folder "
                        f"(no train/good/){extra}")  # fmt: skip
    if not good_dir.is_dir():
        raise DataError(f"{good_dir}: folder of good images not found")
    good = _images(good_dir)
    if not good:
        raise DataError(f"{good_dir}: no images ({'/'.join(IMAGE_SUFFIXES)})")
    defective = _images(defective_dir) if defective_dir.is_dir() else []
    if layout.defective is not None and not defective_dir.is_dir():
        raise DataError(f"{defective_dir}: folder of defective images not found")
    masks = pair_masks(defective_dir, defective, layout.folder(root, "masks"))
    samples = [Sample(f"good/{_rel(p, good_dir)}", p, None, 0) for p in good]
    for p in defective:
        mask = masks.get(p)
        mode = "threshold" if mask is not None and mask.suffix.lower() in JPEG else "warn"
        samples.append(Sample(f"defective/{_rel(p, defective_dir)}", p, mask, 1, mode))
    unmasked = [p for p in defective if p not in masks]
    if unmasked:
        warnings.warn(f"{defective_dir}: {len(unmasked)} of {len(defective)} defective images "
                      f"have no mask (e.g. {unmasked[0].name}); used for image metrics and "
                      "thresholds, and by pseudo-masks for the defect bank",
                      stacklevel=3)  # fmt: skip
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


def split_parts(samples: list[Sample], test: float, validation: float, seed: int) -> list[str]:
    """Each sample's part, "train", "validation" or "test": of each stratum (good, masked defect,
    unmasked defect), ``test`` and ``validation`` fractions drawn by ``seed``; byte-identical
    images form one group and stay in one part.

    A stratum of two groups or more gives at least one to test and keeps at least one for
    training; with three or more, and ``validation`` above 0, it also gives one to validation.
    The test draw is the first of one seeded permutation, the validation draw the next, so the
    test part does not depend on ``validation``."""
    from dualpatch.fileio import sha256_file as file_sha256

    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(file_sha256(s.image_path), []).append(i)
    strata: dict[int, list[list[int]]] = {}
    for members in groups.values():
        stratum = max(_stratum(samples[i]) for i in members)
        strata.setdefault(stratum, []).append(members)
    rng = np.random.default_rng(seed)
    parts = ["train"] * len(samples)
    for stratum in sorted(strata):
        members = strata[stratum]
        n_test, n_validation = _part_sizes(len(members), test, validation)
        order = rng.permutation(len(members))
        for rank, j in enumerate(order[: n_test + n_validation]):
            for i in members[j]:
                parts[i] = "test" if rank < n_test else "validation"
    return parts


def _part_sizes(n: int, test: float, validation: float) -> tuple[int, int]:
    """(test groups, validation groups) of a stratum of ``n`` groups: each at least one where
    that still leaves one to train on."""
    if n < 2:
        return 0, 0
    n_test = min(max(round(test * n), 1), n - 1)
    left = n - n_test
    if not validation or left < 2:
        return n_test, 0
    return n_test, min(max(round(validation * n), 1), left - 1)


def _stratum(sample: Sample) -> int:
    return 0 if sample.label == 0 else (1 if sample.mask_path is not None else 2)
