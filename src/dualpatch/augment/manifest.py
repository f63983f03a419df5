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

from ..data import DefectCrop, Sample, extract_defect_crops, read_image, read_mask
from ..data.images import Size, image_shape
from ..errors import DataError
from ..fileio import atomic_dir, write_image, write_text

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


COLUMNS = tuple(f.name for f in fields(ManifestRow))


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
        )
        self.rows.append(row)
        return row


@contextlib.contextmanager
def open_output(out: str | Path) -> Iterator[OutputWriter]:
    """Write an augmentation folder: ``imgs/`` and ``masks/`` replace the old ones on success only.

    The old manifest goes first and the new one is written last, so a folder never holds a manifest
    that lists files from another run; other content of ``out`` (a model folder) is left alone.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    with atomic_dir(out / "imgs") as imgs, atomic_dir(out / "masks") as masks:
        writer = OutputWriter(out, imgs, masks)
        yield writer
    write_manifest(out, writer.rows)


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
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = []
            for line, r in enumerate(reader, start=2):
                try:
                    fields_ = {c: r[c] or "" for c in COLUMNS}
                    rows.append(ManifestRow(**fields_ | {"seed": int(r["seed"])}))
                except (TypeError, ValueError) as exc:
                    raise DataError(f"{path}: line {line} is malformed ({exc})") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    for r in rows:
        for name in (r.image, r.mask):
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
    with ``extract_defect_crops`` (``padding`` and ``min_size`` as there). All manifests are
    checked before any image is read, so a missing file fails fast.
    """
    listed = [(Path(d), read_manifest(d)[:limit]) for d in dirs]
    crops: list[DefectCrop] = []
    for folder, rows in listed:
        for r in rows:
            img_path, mask_path = folder / r.image, folder / r.mask
            image = read_image(img_path, size)
            mask = read_mask(mask_path, image_shape(img_path), size)
            source = f"{folder.name}/{Path(r.image).stem}"
            crops.extend(extract_defect_crops(image, mask, padding, min_size, source=source))
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
