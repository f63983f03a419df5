"""Reading crop folders (layout in ``dualpatch.data.crop_folder``): a folder with ``crops.csv``
(only the ``crop`` column is required; an empty or missing ``mask`` means every pixel of the crop is
defect) or a folder of plain images, with or without ``_GT`` masks. Every path stays inside its
folder. ``CropRow`` is one row of the crops.csv dualpatch writes.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from dualpatch.data.crops import DefectCrop
from dualpatch.data.images import IMAGE_SUFFIXES, Size, read_image, read_mask
from dualpatch.errors import DataError
from dualpatch.fileio import sha256_file

CROPS_CSV = "crops.csv"
CROPS_JSON = "crops.json"
FORMAT = "dualpatch-crops"
MASK_SUFFIX = "_GT"


@dataclass(frozen=True)
class CropRow:
    """One crop file of a folder; the box is in ``source_image``'s pixels at the cutting scale."""

    crop: str
    mask: str
    source_image: str
    image_height: int
    image_width: int
    y0: int
    x0: int
    y1: int
    x1: int
    defect_area: int
    split: str
    origin: str


COLUMNS = tuple(f.name for f in fields(CropRow))


def written_by_dualpatch(folder: Path) -> bool:
    """True when ``folder`` holds a crops.json written by dualpatch (and its crops.csv)."""
    try:
        info = json.loads((folder / CROPS_JSON).read_text())
    except (OSError, ValueError):
        return False
    ours = isinstance(info, dict) and info.get("format") == FORMAT
    return ours and (folder / CROPS_CSV).is_file()


def read_rows(folder: Path) -> list[CropRow]:
    """The rows of a crops.csv dualpatch wrote (all columns)."""
    path = folder / CROPS_CSV
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            ints = {f.name for f in fields(CropRow) if f.type == "int"}
            typed = ({c: int(r[c]) if c in ints else r[c] for c in COLUMNS} for r in reader)
            return [CropRow(**row) for row in typed]
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{path}: line {reader.line_num}: not a dualpatch crops row ({exc})"
            raise DataError(msg) from exc


def inside_folder(folder: Path, value: str, where: str) -> Path:
    """``folder/value`` when it stays inside ``folder`` (links resolved), else DataError."""
    path = Path(value)
    resolved = (folder / path).resolve()
    if path.is_absolute() or not resolved.is_relative_to(folder.resolve()):
        raise DataError(f"{where}: {value!r} points outside {folder}; crop paths stay inside it")
    if not resolved.is_file():
        raise DataError(f"{where}: {value!r} not found in {folder}")
    return folder / path


def _csv_entries(folder: Path) -> list[tuple[Path, Path | None]]:
    path = folder / CROPS_CSV
    try:  # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "crop" not in (reader.fieldnames or []):
                raise DataError(f"{path}: no 'crop' column (a crops.csv lists crop[,mask,...])")
            entries = []
            for r in reader:
                where = f"{path}: row {reader.line_num - 1}"
                if not (r.get("crop") or "").strip():
                    raise DataError(f"{where}: empty crop")
                crop = inside_folder(folder, r["crop"].strip(), where)
                mask = (r.get("mask") or "").strip()
                entries.append((crop, inside_folder(folder, mask, where) if mask else None))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    return entries


def _plain_entries(folder: Path) -> list[tuple[Path, Path | None]]:
    """Every image of ``folder`` that is not a ``_GT`` mask, with its ``NAME_GT.*`` mask if any."""
    files = sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )  # fmt: skip
    by_stem = {p.stem: p for p in files}
    entries = []
    for p in files:
        if p.stem.endswith(MASK_SUFFIX):
            if p.stem.removesuffix(MASK_SUFFIX) not in by_stem:  # skipping it would lose a crop
                raise DataError(
                    f"{p}: a mask ({MASK_SUFFIX} suffix) with no crop "
                    f"{p.stem.removesuffix(MASK_SUFFIX)}.* beside it; add the crop, or rename "
                    "the file if it is a crop itself"
                )
            continue
        mask = by_stem.get(p.stem + MASK_SUFFIX)
        where = f"{folder}: {p.name}"
        entries.append((inside_folder(folder, p.name, where),
                        inside_folder(folder, mask.name, where) if mask else None))  # fmt: skip
    return entries


def crop_entries(folder: str | os.PathLike[str]) -> list[tuple[Path, Path | None]]:
    """(crop file, mask file or None) of a crops folder, in its order; nothing is decoded."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a crops folder" if folder.exists() else "crops folder not found"
        raise DataError(f"{folder}: {what}")
    has_csv = (folder / CROPS_CSV).is_file()
    entries = _csv_entries(folder) if has_csv else _plain_entries(folder)
    if not entries:
        hint = " (an augmentation folder? pass it with --augmented)"
        hint = hint if (folder / "manifest.csv").is_file() else ""
        raise DataError(f"{folder}: holds no crop images ({', '.join(IMAGE_SUFFIXES)}){hint}")
    return entries


def read_crop_folder(folder: str | os.PathLike[str]) -> list[DefectCrop]:
    """The crops of one folder, in its order, each with the SHA-256 of its files."""
    entries = crop_entries(folder)
    crops = []
    for crop_path, mask_path in entries:
        image = read_image(crop_path)
        if mask_path is None:  # a user's own cut-out: all of it is defect
            mask = np.ones(image.shape[:2], dtype=bool)
        else:
            mask = read_mask(mask_path, image.shape[:2])
        h, w = mask.shape
        crops.append(DefectCrop(
            image, mask, str(crop_path), (0, 0, h, w), sha256_file(crop_path),
            sha256_file(mask_path) if mask_path else "",
        ))  # fmt: skip
    return crops


def load_crop_folders(
    dirs: Sequence[str | os.PathLike[str]], size: Size | None = None
) -> list[DefectCrop]:
    """The crops of every folder in ``dirs``, in order, for the defect bank.

    A warning says so when a folder's crops were cut at another scale than ``size`` (H, W), the
    model's input: its defects would look larger or smaller than those in test images.
    """
    crops: list[DefectCrop] = []
    for d in dirs:
        folder = Path(d)
        crops += read_crop_folder(folder)
        cut = _cut_sizes(folder)
        if size is not None and cut and cut != {tuple(size)}:
            shown = ", ".join(f"{h}x{w}" for h, w in sorted(cut))
            warnings.warn(
                f"{folder}: crops were cut at {shown} (HxW) but the model's input is "
                f"{size[0]}x{size[1]}: defects are at another scale than in test images",
                stacklevel=2,
            )
    return crops


def _cut_sizes(folder: Path) -> set[tuple[int, int]]:
    if not written_by_dualpatch(folder):
        return set()
    parts = json.loads((folder / CROPS_JSON).read_text()).get("parts", [])
    return {tuple(p["size"]) for p in parts if isinstance(p.get("size"), list)}


def crops_fingerprint(dirs: Sequence[str | os.PathLike[str]]) -> str:
    """One SHA-256 over the crop and mask files of ``dirs``: changes when any crop changes."""
    import hashlib

    h = hashlib.sha256()
    for d in dirs:
        for crop, mask in crop_entries(d):
            digests = f"{sha256_file(crop)}\0{sha256_file(mask) if mask else ''}"
            h.update(f"{crop}\0{digests}\n".encode())
    return h.hexdigest()
