"""KSDD2 preparation: resize to a fixed size and write ``train.csv``/``test.csv`` labels.

The raw images are about 230x630 and vary by a few pixels; the prepared set has one size
(224x632 WxH by default: a multiple of the backbone stride close to the original aspect).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dualpatch.data.extract import Limits, extract_into
from dualpatch.data.images import read_image, read_mask, resize, resize_image, resize_mask
from dualpatch.data.ksdd2 import EXPECTED_COUNTS, LABELS, SPLITS, find_root, scan_split, unpaired
from dualpatch.errors import ConfigError, DataError
from dualpatch.events import track
from dualpatch.fileio import check_output_dir, output_dir

#: the reference's size, (H, W) as every size in dualpatch
DEFAULT_IMAGE_SIZE = (632, 224)
COMMAND = "data prepare"
#: each worker decodes one image at a time (see ``images.max_pixels`` for the per-image budget)
MAX_WORKERS = 64


@dataclass
class PrepareReport:
    """What ``prepare_ksdd2`` wrote: per-split (images, positives) and the dropped duplicates."""

    out: Path
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def prepare_ksdd2(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    size: tuple[int, int] | None = None,
    limits: Limits = Limits(),
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    force: bool = False,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
) -> PrepareReport:
    """Write a resized copy of KSDD2 from ``src`` (folder or zip/tar) into ``out``.

    Images are resized bilinearly and masks nearest-neighbour to ``image_size`` = (H, W); masks
    are written as 0/255. ``<split>.csv`` lists ``path,label`` with ``positive`` when the original
    mask has any non-zero pixel. The stray ``(copy)`` duplicates are dropped. Counts that differ
    from the official ones are warnings, never errors. ``out`` appears complete or not at all.
    ``size`` = (W, H) is the old, width-first name, still read (with a warning).
    """
    src, out = Path(src), Path(out)
    h, w = _height_width(image_size, size)
    _check_paths(src, out, workers)
    check_output_dir(out, COMMAND, force, [src], legacy=("prepared.json",))
    report = PrepareReport(out)
    workers = workers or min(4, os.cpu_count() or 1)
    with output_dir(out, COMMAND, force, [src], legacy=("prepared.json",)) as tmp:
        if src.is_file():
            # Unpack beside the output, never inside it, and throw the raw copy away afterwards.
            with tempfile.TemporaryDirectory(prefix=f".{out.name}.raw.", dir=out.parent) as raw:
                extract_into(src, raw, limits, progress)
                _prepare_tree(find_root(Path(raw)), tmp, (h, w), workers, progress, log, report)
        else:
            _prepare_tree(find_root(src), tmp, (h, w), workers, progress, log, report)
        # size_wh: the width-first record older readers of prepared.json know
        info = {"source": str(src), "image_size": [h, w], "size_wh": [w, h],
                "counts": report.counts}  # fmt: skip
        (tmp / "prepared.json").write_text(json.dumps({**info, "dropped": report.dropped}) + "\n")
    report.warnings += _official_count_warnings(report.counts)
    for msg in report.warnings:
        warnings.warn(msg, stacklevel=2)
    log(", ".join(f"{s}: {n:,} images ({p:,} positive)" for s, (n, p) in report.counts.items()))
    log(f"prepared KSDD2 at {w}x{h} in {out}")
    return report


def _height_width(image_size: tuple[int, int], size: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) to prepare at: ``image_size``, or the old width-first ``size`` (with a warning)."""
    h, w = image_size
    if size is not None:
        warnings.warn(
            "prepare_ksdd2: size=(W, H) is renamed image_size=(H, W) (height first)",
            FutureWarning,
            stacklevel=3,  # prepare_ksdd2's caller
        )
        w, h = size
    if w < 1 or h < 1:
        raise DataError(f"image_size {h} {w}: height and width must be positive")
    return h, w


def _check_paths(src: Path, out: Path, workers: int | None) -> None:
    """One-line errors for a missing source, an output that is or holds it, a bad worker count."""
    if not src.exists():
        raise DataError(f"{src}: not found (give the KSDD2 folder or its zip)")
    if out.resolve() == src.resolve() or src.resolve().is_relative_to(out.resolve()):
        raise DataError(f"{out}: output must not be the source or contain it ({src})")
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {workers}: expected 1 to {MAX_WORKERS}")


def _official_count_warnings(counts: dict[str, tuple[int, int]]) -> list[str]:
    """A line for each split whose (images, positives) differ from the official KSDD2 counts."""
    found = []
    for split, (n, pos) in counts.items():
        en, epos = EXPECTED_COUNTS[split]
        if (n, pos) != (en, epos):
            found.append(
                f"{split}: {n:,} images ({pos:,} positive), official KSDD2 has "
                f"{en:,} ({epos:,} positive)"
            )
    return found


def _prepare_tree(root, tmp, hw, workers, progress, log, report: PrepareReport) -> None:
    for split in SPLITS:
        files = scan_split(root / split)
        if files.copies:
            names = [f"{split}/{p.name}" for p in files.copies]
            report.dropped += names
            log(f"dropped {len(names)} stray duplicate(s): {', '.join(names)}")
        for what, count, names in unpaired(files):
            action = "ignored" if what == "unexpected files" else "skipped"
            report.warnings.append(f"{split}: {count} {what} ({action}): {names}")
        if not files.pairs:
            raise DataError(f"{root / split}: no NNNNN.png + NNNNN_GT.png pairs")
        (tmp / split).mkdir()

        def one(item: tuple[str, tuple[Path, Path]], split: str = split) -> tuple[str, str]:
            stem, (img_path, mask_path) = item
            return _prepare_pair(img_path, mask_path, tmp / split / stem, hw, split)

        with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while coding images
            jobs = pool.map(one, files.pairs.items())
            rows = list(track(jobs, f"preparing {split}", len(files.pairs), progress))
        with (tmp / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
        report.counts[split] = (len(rows), sum(label == LABELS[1] for _, label in rows))


def _prepare_pair(img_path: Path, mask_path: Path, stem: Path, hw, split: str) -> tuple[str, str]:
    image = read_image(img_path)
    # KSDD2 masks are binary by design; any non-zero pixel marks the defect
    mask = read_mask(mask_path, image.shape[:2], nonbinary="ok")
    positive = bool(mask.any())
    small = resize_mask(mask, hw)
    if positive and not small.any():
        # Nearest-neighbour can skip a defect only a pixel or two wide; keep it by marking every
        # output pixel that covers any of it, so the label and the mask never disagree.
        box = resize(mask.astype(np.uint8) * 255, hw, "box")
        small = np.asarray(box) > 0
    Image.fromarray(resize_image(image, hw)).save(stem.with_suffix(".png"))
    Image.fromarray(small.astype(np.uint8) * 255).save(stem.with_name(f"{stem.name}_GT.png"))
    return f"{split}/{stem.name}.png", LABELS[positive]
