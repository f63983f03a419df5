"""Augmentation folders: ``imgs/``, ``masks/`` and ``manifest.csv``, written atomically, read back.

Every generator (ddpm, sdxl, paste) writes the same layout, so the defect bank can take any of them
through ``load_augmented``.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from dualpatch.data import DefectCrop, Sample, extract_defect_crops, read_image, read_mask
from dualpatch.data.crop_folder import CropImageWriter, CropSpec, open_crop_folder
from dualpatch.data.images import Size, image_shape, resize_mask
from dualpatch.errors import DataError
from dualpatch.fileio import output_dir, write_image, write_text

MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class ManifestRow:
    """One generated image: its files (relative to the folder) and what it was made from."""

    image: str
    mask: str
    source_image: str
    source_mask: str
    seed: int
    model_sha256: str
    #: why the defect went where it is (manifests written before this column read as "")
    placement: str = ""


COLUMNS = tuple(f.name for f in fields(ManifestRow))
OPTIONAL = ("placement",)


def relative(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, else absolute, so folders stay movable."""
    path = Path(path).resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


class OutputWriter:
    """Collects generated images and masks for one folder (see ``open_output``)."""

    def __init__(self, out: Path, imgs: Path, masks: Path):
        self.out, self._imgs, self._masks = out, imgs, masks
        self.rows: list[ManifestRow] = []

    def add(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        source_image: Path,
        source_mask: Path | None,
        seed: int,
        model_sha256: str = "",
        placement: str = "",
    ) -> ManifestRow:
        """Write one image (HxW or HxWx3 uint8) and its bool mask as PNG; returns its row.

        PNG, whatever the source format: a lossy format would alter the pixels outside the mask.
        """
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.dtype != np.uint8 or image.shape[:2] != mask.shape:
            raise ValueError(f"image {image.shape} {image.dtype} does not fit mask {mask.shape}")
        name = f"{len(self.rows):05d}.png"
        write_image(self._imgs / name, np.ascontiguousarray(image))
        write_image(self._masks / name, mask.astype(np.uint8) * 255)
        row = ManifestRow(
            f"imgs/{name}",
            f"masks/{name}",
            relative(source_image, self.out),
            relative(source_mask, self.out) if source_mask else "",
            int(seed),
            model_sha256,
            placement,
        )
        self.rows.append(row)
        return row


#: what ``dualpatch augment`` writes; the marker names it, so any method may replace any other's
COMMAND = "augment"
#: kept between runs: ddpm trains (and resumes) its model in OUT/model by default
KEEP = ("model",)


@contextlib.contextmanager
def open_output(
    out: str | Path,
    as_crops: CropSpec | None = None,
    origin: str = "synthetic",
    force: bool = False,
    inputs: Sequence[str | Path | None] = (),
) -> Iterator[OutputWriter | CropImageWriter]:
    """Write an augmentation folder: the whole folder is made beside ``out`` and swapped in.

    The old folder stays usable until the new one is complete (Ctrl-C or an error leaves it as it
    was); an ``out`` that holds files ``dualpatch augment`` did not write is refused unless
    ``force`` (see ``fileio.output_dir``); its ``model/`` folder is carried over.

    With ``as_crops`` the folder is a crop folder instead (``dualpatch.data.crop_folder``): each
    image is cut into defect crops at ``as_crops.size``, tagged with ``origin`` (the method).
    """
    if as_crops is not None:
        info = {"command": f"augment {origin} --as-crops", "size": list(as_crops.size),
                "padding": as_crops.padding, "min_size": as_crops.min_size}  # fmt: skip
        with open_crop_folder(out, info, as_crops.force, as_crops.append) as folder:
            yield CropImageWriter(folder, as_crops, origin)
        return
    with output_dir(out, COMMAND, force, inputs, keep=KEEP, legacy=(MANIFEST,)) as tmp:
        writer = OutputWriter(Path(out), tmp / "imgs", tmp / "masks")
        yield writer
        write_manifest(tmp, writer.rows)


def check_output(out: str | Path, force: bool = False, inputs: Sequence = ()) -> None:
    """Refuse an unusable ``out`` before minutes of training (same rules as ``open_output``)."""
    from dualpatch.fileio import check_output_dir

    check_output_dir(out, COMMAND, force, inputs, keep=KEEP, legacy=(MANIFEST,))


def write_manifest(out: Path, rows: Sequence[ManifestRow]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(astuple(r) for r in rows)
    write_text(Path(out) / MANIFEST, buf.getvalue())


def read_manifest(folder: str | Path) -> list[ManifestRow]:
    """Rows of ``folder/manifest.csv``; DataError if it or a listed image or mask is missing."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found (not an augmentation folder from 'dualpatch augment')")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            given = reader.fieldnames or []
            missing = [c for c in COLUMNS if c not in given and c not in OPTIONAL]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = []
            for line, r in enumerate(reader, start=2):
                try:
                    fields_ = {c: r.get(c) or "" for c in COLUMNS}
                    rows.append(ManifestRow(**fields_ | {"seed": int(r["seed"])}))
                except (TypeError, ValueError) as exc:
                    raise DataError(f"{path}: line {line} is malformed ({exc})") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    base = folder.resolve()
    for line, r in enumerate(rows, start=2):
        for name in (r.image, r.mask):
            if not (folder / name).resolve().is_relative_to(base):
                raise DataError(
                    f"{path}: line {line} names {name!r}, outside {folder}; refusing to read it"
                )
            if not (folder / name).is_file():
                raise DataError(f"{folder / name}: listed in {path} but missing")
    return rows


def load_augmented(
    dirs: Sequence[str | Path],
    size: Size,
    padding: int = 16,
    min_size: int = 32,
    limit: int | None = None,
) -> list[DefectCrop]:
    """Defect crops of one or more augmentation folders, for the defect bank.

    ``limit`` takes only the first rows of each manifest (a pool of 200 serves N = 50, 100, 200).
    Each listed image and mask is resized to ``size`` = (H, W), the model's input scale, and cut
    with ``extract_defect_crops`` (``padding`` and ``min_size`` as there), one crop per region of
    the mask at the image's own size. All manifests are
    checked before any image is read, so a missing file fails fast.
    """
    listed = [(Path(d), read_manifest(d)[:limit]) for d in dirs]
    crops: list[DefectCrop] = []
    for folder, rows in listed:
        for r in rows:
            img_path, mask_path = folder / r.image, folder / r.mask
            image = read_image(img_path, size)
            native = read_mask(mask_path, image_shape(img_path))  # regions at the image's size
            mask = resize_mask(native, size)
            source = f"{folder.name}/{Path(r.image).stem}"
            crops.extend(extract_defect_crops(image, mask, padding, min_size, source, native))
    return crops


def augmented_samples(dirs: Sequence[str | Path], limit: int | None = None) -> list[Sample]:
    """The synthetic images of one or more augmentation folders as defective ``Sample`` records.

    Feeding whole images (rather than crops) lets the defect bank take the patches under each mask
    with the same surrounding context that test patches have. ``limit`` as in ``load_augmented``.
    """
    listed = [(Path(d), read_manifest(d)[:limit]) for d in dirs]
    return [
        Sample(f"{folder.name}/{Path(r.image).stem}", folder / r.image, folder / r.mask, 1)
        for folder, rows in listed
        for r in rows
    ]
