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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from dualpatch.data.base import Dataset
from dualpatch.data.crop_reader import (
    COLUMNS,
    CROPS_CSV,
    CROPS_JSON,
    FORMAT,
    MASK_SUFFIX,
    CropRow,
    inside_folder,
    read_rows,
    written_by_dualpatch,
)
from dualpatch.data.crops import DefectCrop, extract_defect_crops
from dualpatch.data.images import Size, resize_image, resize_mask
from dualpatch.errors import DataError
from dualpatch.fileio import atomic_dir, sha256_file, write_image


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

    def __init__(self, tmp: Path, rows: list[CropRow], out: Path | None = None):
        self._tmp, self._out = tmp, out
        self.rows = rows  # everything the folder will list, earlier rows first when appending
        self.added: list[CropRow] = []
        self._names = {Path(r.crop).stem for r in rows}
        self._held: dict[str, str] | None = None  # the earlier crops' file digests, when asked

    # alike in shape to augment.manifest's writer's add (typed arguments), not in what it records
    def add(
        self,
        crop: DefectCrop,
        name: str,
        source_image: str | Path,
        image_shape: Size,
        split: str = "train",
        origin: str = "real",
        new_only: bool = False,
    ) -> CropRow:
        """Write ``crop`` as ``name.png`` and ``name_GT.png`` (made unique) and list it;
        ``new_only``: refuse a crop identical to one the folder held (a generator's --append with
        its earlier seed draws the same defects again; real crops of the same data may repeat)."""
        name = self._unique(_safe_name(name))
        write_image(self._tmp / f"{name}.png", np.ascontiguousarray(crop.image))
        write_image(self._tmp / f"{name}{MASK_SUFFIX}.png", crop.mask.astype(np.uint8) * 255)
        row = CropRow(
            f"{name}.png", f"{name}{MASK_SUFFIX}.png", str(Path(source_image).resolve()),
            int(image_shape[0]), int(image_shape[1]), *crop.box, int(crop.mask.sum()),
            split, origin,
        )  # fmt: skip
        held = self._repeats(row) if new_only else None
        if held is not None:
            raise DataError(
                f"{self._out}: --append would add {row.crop}, identical to its {held}: the same "
                "seed draws the same defects again; use another --seed"
            )
        self.rows.append(row)
        self.added.append(row)
        return row

    def _repeats(self, row: CropRow) -> str | None:
        """The earlier crop that ``row`` repeats byte for byte, if any."""
        if self._held is None:
            earlier = self.rows[: len(self.rows) - len(self.added)]
            self._held = {self._digest(r): r.crop for r in earlier}
        return self._held.get(self._digest(row))

    def _digest(self, row: CropRow) -> str:
        files = [self._tmp / n for n in (row.crop, row.mask) if n]
        return "\0".join(sha256_file(f) for f in files)

    def _unique(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self._names or candidate.endswith(MASK_SUFFIX):
            k += 1
            candidate = f"{name}-{k}"
        self._names.add(candidate)
        return candidate


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip(".-") or "crop"


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
                    src = inside_folder(out, name, f"{out / CROPS_CSV}: row {line}")
                    _link_or_copy(src, tmp / name)
        writer = CropFolderWriter(tmp, rows, out)
        yield writer
        from dualpatch import __version__

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
    from dualpatch.events import track

    defective = dataset.defective()
    if not defective:
        root = dataset.root or "<dataset>"
        raise DataError(f"{root}: the training split has no defective images")
    settings = {"size": list(spec.size), "padding": spec.padding, "min_size": spec.min_size}
    split = getattr(dataset, "split", "train")
    with open_crop_folder(out, {**(info or {}), **settings}, spec.force, spec.append) as folder:
        pairs = dataset.defect_crops_by_image(spec.size, spec.padding, spec.min_size)
        for sample, crops in track(pairs, "crops", len(defective), progress):
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
        native = np.asarray(mask).astype(bool)  # regions are cut at the generated image's size
        image, mask = resize_image(image, self.spec.size), resize_mask(mask, self.spec.size)
        name = f"{self.origin}-{self.images:05d}"
        crops = extract_defect_crops(image, mask, self.spec.padding, self.spec.min_size, name,
                                     native)  # fmt: skip
        for k, crop in enumerate(crops):
            self.folder.add(crop, f"{name}-{k}", source_image, self.spec.size, "train",
                            self.origin, new_only=True)  # fmt: skip
        self.images += 1
