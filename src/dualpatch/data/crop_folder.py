"""Crop folders: defect crops as files, for the defect bank, to inspect, edit or extend by hand.

A folder holds ``NAME.png`` (the crop) beside ``NAME_GT.png`` (its mask, 0/255, cut to the same
box): the flat layout of the reference scripts' crop folders, so theirs and ours read alike.
dualpatch adds ``crops.csv`` (``COLUMNS``: the files, the source image, the box in source-image
pixels at the scale the crops were cut at, the defect area, the split, the origin) and
``crops.json`` (who wrote the folder, how). ``crops.json`` marks a folder as dualpatch's: only such
a folder is ever replaced (``force``) or added to (``append``); any other non-empty folder is
refused.

Reading takes a folder with ``crops.csv`` (only the ``crop`` column is required; an empty or
missing ``mask`` means every pixel of the crop is defect) or a folder of plain images, with or
without ``_GT`` masks. Every path stays inside its folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_dir, sha256_file, write_image
from .base import Dataset
from .crops import DefectCrop, extract_defect_crops
from .images import IMAGE_SUFFIXES, Size, read_image, read_mask, resize_image, resize_mask

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


@dataclass(frozen=True)
class CropSpec:
    """How generated or real images become crops: the scale (H, W) they are cut at, the box
    padding and smallest side (as ``extract_defect_crops``), and what to do with a folder
    dualpatch wrote before (``force``: replace it, ``append``: add to it)."""

    size: Size = (320, 128)
    padding: int = 16
    min_size: int = 32
    force: bool = False
    append: bool = False


class CropFolderWriter:
    """Writes crops into a folder being built (see ``open_crop_folder``)."""

    def __init__(self, tmp: Path, rows: list[CropRow]):
        self._tmp = tmp
        self.rows = rows  # everything the folder will list, earlier rows first when appending
        self.added: list[CropRow] = []
        self._names = {Path(r.crop).stem for r in rows}

    def add(
        self,
        crop: DefectCrop,
        name: str,
        source_image: str | Path,
        image_shape: Size,
        split: str = "train",
        origin: str = "real",
    ) -> CropRow:
        """Write ``crop`` as ``name.png`` and ``name_GT.png`` (made unique) and list it."""
        name = self._unique(_safe_name(name))
        write_image(self._tmp / f"{name}.png", np.ascontiguousarray(crop.image))
        write_image(self._tmp / f"{name}{MASK_SUFFIX}.png", crop.mask.astype(np.uint8) * 255)
        row = CropRow(
            f"{name}.png", f"{name}{MASK_SUFFIX}.png", str(Path(source_image).resolve()),
            int(image_shape[0]), int(image_shape[1]), *crop.box, int(crop.mask.sum()),
            split, origin,
        )  # fmt: skip
        self.rows.append(row)
        self.added.append(row)
        return row

    def _unique(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self._names or candidate.endswith(MASK_SUFFIX):
            k += 1
            candidate = f"{name}-{k}"
        self._names.add(candidate)
        return candidate


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip(".-") or "crop"


def written_by_dualpatch(folder: Path) -> bool:
    """True when ``folder`` holds a crops.json written by dualpatch (and its crops.csv)."""
    try:
        info = json.loads((folder / CROPS_JSON).read_text())
    except (OSError, ValueError):
        return False
    ours = isinstance(info, dict) and info.get("format") == FORMAT
    return ours and (folder / CROPS_CSV).is_file()


@contextlib.contextmanager
def open_crop_folder(
    out: str | os.PathLike[str], info: dict, force: bool = False, append: bool = False
) -> Iterator[CropFolderWriter]:
    """Build a crop folder beside ``out`` and rename it onto ``out`` only when the block succeeds.

    ``out`` must be new, empty, or a folder dualpatch wrote (then ``force`` replaces it and
    ``append`` keeps its crops and adds the new ones). ``info`` (what wrote these crops, with which
    settings) is added to the folder's crops.json.
    """
    out = Path(out)
    ours = out.is_dir() and written_by_dualpatch(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file, not a folder for crops")
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise DataError(
            f"{out}: folder is not empty and was not written by dualpatch (no {CROPS_JSON}); "
            "refusing to write into it: choose a new or empty folder"
        )
    if ours and not (force or append):
        raise DataError(
            f"{out}: already holds crops written by dualpatch; "
            "add --force to replace them or --append to add to them"
        )
    parts: list[dict] = []
    rows: list[CropRow] = []
    with atomic_dir(out) as tmp:
        if ours and append:
            parts = json.loads((out / CROPS_JSON).read_text()).get("parts", [])
            rows = read_rows(out)
            for line, r in enumerate(rows, start=1):
                for name in filter(None, (r.crop, r.mask)):  # a hand-edited row may lack a mask
                    src = _inside(out, name, f"{out / CROPS_CSV}: row {line}")
                    _link_or_copy(src, tmp / name)
        writer = CropFolderWriter(tmp, rows)
        yield writer
        from .. import __version__

        parts.append({**info, "crops": len(writer.added)})
        meta = {"format": FORMAT, "written_by": f"dualpatch {__version__}", "parts": parts}
        (tmp / CROPS_JSON).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        (tmp / CROPS_CSV).write_text(_csv_text(writer.rows), encoding="utf-8")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the old folder is removed after the swap: a hard link costs nothing
    except OSError:
        shutil.copy2(src, dst)


def _csv_text(rows: Sequence[CropRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(astuple(r) for r in rows)
    return buf.getvalue()


def write_training_crops(
    dataset: Dataset,
    out: str | os.PathLike[str],
    spec: CropSpec = CropSpec(),
    info: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[CropRow]:
    """Write one crop per connected defect region of ``dataset`` (a training split) into ``out``.

    The crops are ``Dataset.defect_crops(spec.size, spec.padding, spec.min_size)``, in the same
    order, so a model fed from this folder equals one fitted with ``--defects crop``.
    """
    from tqdm import tqdm

    defective = dataset.defective()
    if not defective:
        root = dataset.root or "<dataset>"
        raise DataError(f"{root}: the training split has no defective images")
    settings = {"size": list(spec.size), "padding": spec.padding, "min_size": spec.min_size}
    split = getattr(dataset, "split", "train")
    with open_crop_folder(out, {**(info or {}), **settings}, spec.force, spec.append) as folder:
        pairs = dataset.defect_crops_by_image(spec.size, spec.padding, spec.min_size)
        for sample, crops in tqdm(pairs, total=len(defective), desc="crops", unit="img",
                                  disable=None if progress else True):  # fmt: skip
            for k, crop in enumerate(crops):
                name = f"{sample.id}-{k}"
                folder.add(crop, name, sample.image_path, spec.size, split, "real")
    if log:
        log(f"{len(folder.added)} crops of {len(defective)} defective images")
    return folder.added


class CropImageWriter:
    """The ``augment`` writers' interface (``add(image, mask, ...)``) for ``--as-crops``: each
    generated image is resized to ``spec.size`` and cut into crops as ``load_augmented`` cuts it."""

    def __init__(self, folder: CropFolderWriter, spec: CropSpec, origin: str):
        self.folder, self.spec, self.origin = folder, spec, origin
        self.images = 0

    @property
    def rows(self) -> list[CropRow]:
        return self.folder.added

    def add(self, image, mask, source_image, source_mask=None, seed=0, model_sha256="",
            placement=""):  # fmt: skip
        # placement: the manifest's "why here" text; crops.csv has no column for it
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[2] == 1:  # grayscale output reads back as RGB, as the defect bank sees it
            image = np.repeat(image, 3, axis=2)
        image, mask = resize_image(image, self.spec.size), resize_mask(mask, self.spec.size)
        name = f"{self.origin}-{self.images:05d}"
        crops = extract_defect_crops(image, mask, self.spec.padding, self.spec.min_size, name)
        for k, crop in enumerate(crops):
            self.folder.add(crop, f"{name}-{k}", source_image, self.spec.size, "train", self.origin)
        self.images += 1


# -------------------------------------------------------------------------------- reading
def read_rows(folder: Path) -> list[CropRow]:
    """The rows of a crops.csv dualpatch wrote (all columns)."""
    path = folder / CROPS_CSV
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            ints = {f.name for f in fields(CropRow) if f.type == "int"}
            typed = ({c: int(r[c]) if c in ints else r[c] for c in COLUMNS} for r in reader)
            return [CropRow(**row) for row in typed]
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{path}: line {reader.line_num}: not a dualpatch crops row ({exc})"
            raise DataError(msg) from exc


def _inside(folder: Path, value: str, where: str) -> Path:
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
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "crop" not in (reader.fieldnames or []):
                raise DataError(f"{path}: no 'crop' column (a crops.csv lists crop[,mask,...])")
            entries = []
            for r in reader:
                where = f"{path}: row {reader.line_num - 1}"
                if not (r.get("crop") or "").strip():
                    raise DataError(f"{where}: empty crop")
                crop = _inside(folder, r["crop"].strip(), where)
                mask = (r.get("mask") or "").strip()
                entries.append((crop, _inside(folder, mask, where) if mask else None))
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
            continue
        mask = by_stem.get(p.stem + MASK_SUFFIX)
        where = f"{folder}: {p.name}"
        entries.append((_inside(folder, p.name, where),
                        _inside(folder, mask.name, where) if mask else None))  # fmt: skip
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
