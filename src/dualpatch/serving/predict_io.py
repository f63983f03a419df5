"""``predict``'s output, written batch by batch: ``scores.csv`` (with a verdict per image when a
threshold is known), one anomaly-map PNG per image and a colour overlay on each photo at its own
size.

Memory stays flat and time linear in the number of images: nothing is kept once written, and a map
PNG's grey levels come from a scale fixed in the model at fit time (``map_scale_``: the largest
map value over the training images is grey level 128), never from the other images scored with
it. The folder appears whole (``fileio.output_dir``), so an interrupted or failed run leaves the
old output as it was.

Verdicts: ``defect`` when the score is above the threshold, else ``ok`` (as ``serve`` says it);
the threshold is ``--threshold`` when given, else the model's stored one (model.json
``threshold``), else none, and then the verdict column stays empty (``verdict_threshold``).

``PredictionWriter`` is the piece other front ends (e.g. a distributed ``predict``) reuse:
``write_batch(files, names, scores, maps)`` with the names from ``map_names``.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dualpatch.errors import DataError

COMMAND = "predict"
#: grey level of the largest anomaly-map value seen on the training images
TRAINING_MAX_GREY = 128
#: scores.csv's columns
COLUMNS = ("image", "map", "overlay", "score", "verdict")
#: which pictures predict writes: grey maps at the model's size, overlays at the photo's, or both
MAPS = ("both", "grey", "overlay")
#: an image whose width/height ratio differs from the model's by more than this factor is named
#: in the one aspect-ratio warning (KSDD2's few-pixel size differences stay below it)
ASPECT_TOLERANCE = 1.10
#: the overlay's colours: below, at and at twice the threshold
BLUE, YELLOW, RED = (np.array(c, np.float32) for c in ((40, 80, 255), (255, 230, 0), (230, 0, 0)))
#: JPEG quality of the overlays (photos: PNG would be several times larger for no visible gain)
OVERLAY_QUALITY = 90


def unique_inputs(files: Sequence[Path]) -> list[Path]:
    """``files`` without repeats (the same file named twice, also through another path)."""
    seen: set[Path] = set()
    out = []
    for f in files:
        key = Path(f).resolve()
        if key not in seen:
            seen.add(key)
            out.append(Path(f))
    return out


def map_names(files: Sequence[Path]) -> list[str]:
    """Map file names under ``maps/``, unique and traceable to their input.

    Each name is the input's path relative to the folder that holds all inputs, with ``.png`` for
    its suffix; an input whose stem another input in the same folder shares (``a.png``, ``a.jpg``)
    keeps its whole name (``a.jpg.png``). Two folders that both hold ``a.png`` give
    ``one/a.png`` and ``two/a.png``.
    """
    absolute = [Path(os.path.abspath(f)) for f in files]
    if not absolute:
        return []
    base = Path(os.path.commonpath([p.parent for p in absolute]))
    stems: dict[tuple[Path, str], int] = {}
    for p in absolute:
        stems[(p.parent, p.stem)] = stems.get((p.parent, p.stem), 0) + 1
    names = []
    for p in absolute:
        rel = p.relative_to(base)
        whole = stems[(p.parent, p.stem)] > 1 or not p.suffix
        names.append(rel.as_posix() + ".png" if whole else rel.with_suffix(".png").as_posix())
    if len(set(names)) != len(names):  # cannot happen for distinct files; never overwrite one
        raise DataError("predict: two inputs map to the same map name; give each file once")
    return names


def map_to_uint8(amap: np.ndarray, scale: float | None) -> np.ndarray:
    """Grey levels of one map: ``scale`` (the training maximum) is grey 128, twice it saturates.

    Without a scale (a model saved before it was recorded) the map is scaled by its own maximum.
    """
    top = scale / TRAINING_MAX_GREY * 255 if scale else float(amap.max())
    return np.clip(np.rint(amap / max(top, 1e-12) * 255), 0, 255).astype(np.uint8)


def verdict_threshold(model_dir: str | os.PathLike[str],
                      given: float | None) -> tuple[float | None, str]:  # fmt: skip
    """(threshold, where it came from): ``given`` (``--threshold``), else model.json's stored
    ``threshold``, else (None, "none"). A NaN or infinite threshold is refused."""
    import math

    from dualpatch.card import ModelCard

    if given is not None:
        if not math.isfinite(given):
            raise DataError(f"--threshold {given}: expected a finite number")
        return float(given), "--threshold"
    # the card refuses a NaN or non-number threshold; its seal is checked when the model loads
    stored = ModelCard.read(model_dir, seal=False).threshold
    return (None, "none") if stored is None else (float(stored), "model.json")


def verdict(score: float, threshold: float | None) -> str:
    """``defect`` above the threshold, ``ok`` at or below it, "" without one (as serve)."""
    if threshold is None:
        return ""
    return "defect" if score > threshold else "ok"


def aspect_warning(files: Sequence[Path], size: Sequence[int]) -> str | None:
    """One line naming how many of ``files`` have another width/height ratio than the model's
    (H, W) ``size`` (beyond ``ASPECT_TOLERANCE``) and the largest stretch; None when all fit.

    Reads image headers only."""
    from dualpatch.data.images import image_shape

    model = size[1] / size[0]
    off = []
    for f in files:
        try:
            h, w = image_shape(f)
        except DataError:
            continue  # reading the image reports it in its own words
        stretch = max((w / h) / model, model / (w / h))
        if stretch > ASPECT_TOLERANCE:
            off.append((stretch, f, w, h))
    if not off:
        return None
    stretch, f, w, h = max(off, key=lambda t: t[0])
    return (
        f"{len(off)} of {len(files)} images have another aspect ratio than the model's "
        f"{size[1]}x{size[0]} (WxH) and are resized to it, stretched by up to {stretch:.2f}x "
        f"(e.g. {f}: {w}x{h}); fit on images of the same shape, or crop them first"
    )


def colour_overlay(image: np.ndarray, amap: np.ndarray, reference: float) -> np.ndarray:
    """The photo with the anomaly map laid over it, at the photo's own size: blue (0), yellow
    (``reference``, the threshold), red (twice it and above); opacity grows with the map up to the
    threshold, so normal surface stays visible."""
    from dualpatch.data.images import resize

    h, w = image.shape[:2]
    big = resize(np.asarray(amap, dtype=np.float32), (h, w), "bilinear")
    r = np.clip(big / max(reference, 1e-12), 0.0, 2.0)[..., None]
    low, high = np.clip(r, 0, 1), np.clip(r - 1, 0, 1)
    colour = (1 - low) * BLUE + low * ((1 - high) * YELLOW + high * RED)
    alpha = 0.65 * low**2
    out = image.astype(np.float32) * (1 - alpha) + colour * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class PredictionWriter:
    """Writes ``scores.csv`` rows and map PNGs into ``folder`` as batches come in.

    ``shown`` is the folder the user asked for (``folder`` is usually its temporary twin): error
    messages name the file there. Use as a context manager; ``count`` is the rows written.
    """

    def __init__(self, folder: str | os.PathLike[str], shown: str | os.PathLike[str],
                 scale: float | None, threshold: float | None = None,
                 maps: str = "both"):  # fmt: skip
        if maps not in MAPS:
            raise DataError(f"--maps {maps}: expected one of {', '.join(MAPS)}")
        self.folder, self.shown, self.scale = Path(folder), Path(shown), scale
        self.threshold, self.maps = threshold, maps
        self.count = 0
        self._file = None

    def __enter__(self) -> PredictionWriter:
        self._file = self._guard("scores.csv", lambda: open(  # noqa: SIM115
            self.folder / "scores.csv", "w", newline="", encoding="utf-8"))  # fmt: skip
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._guard("scores.csv", lambda: self._csv.writerow(COLUMNS))
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            self._guard("scores.csv", file.close)

    def _guard(self, name: str, action):
        try:
            return action()
        except OSError as exc:  # full disk, quota, permissions: name the file the user asked for
            raise DataError(
                f"{self.shown / name}: cannot write ({exc.strerror or exc}); "
                f"{self.shown} was left as it was"
            ) from None

    def write_batch(self, files: Sequence[Path | str], names: Sequence[str],
                    scores: np.ndarray, maps: np.ndarray) -> None:  # fmt: skip
        """One batch: a map PNG per image under ``maps/``, its overlay under ``overlays/`` and
        its ``scores.csv`` row."""
        for file, name, score, amap in zip(files, names, scores, maps, strict=True):
            grey = f"maps/{name}" if self.maps in ("both", "grey") else ""
            over = overlay_name(name) if self.maps in ("both", "overlay") else ""
            if grey:
                self._guard(grey, lambda g=grey, a=amap: self._save_grey(g, a))
            if over:
                self._save_overlay(over, Path(file), amap)
            row = [str(file), grey, over, f"{float(score):.8g}", verdict(score, self.threshold)]
            self._guard("scores.csv", lambda r=row: self._csv.writerow(r))
            self.count += 1

    def _save_grey(self, rel: str, amap: np.ndarray) -> None:
        from PIL import Image

        target = self.folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(map_to_uint8(amap, self.scale)).save(target, format="PNG")

    def _save_overlay(self, rel: str, photo: Path, amap: np.ndarray) -> None:
        from PIL import Image

        from dualpatch.data.images import read_image

        image = read_image(photo)  # read again at its own size: decoding errors name the file
        # the threshold is the colour scale's middle; without one, the training maximum
        reference = self.threshold or self.scale or float(np.max(amap)) or 1.0
        target = self.folder / rel

        def save() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(colour_overlay(image, amap, reference))
            picture.save(target, format="JPEG", quality=OVERLAY_QUALITY)

        self._guard(rel, save)


def overlay_name(map_name: str) -> str:
    """``overlays/<name>.jpg`` for the map named ``map_name`` (``<name>.png``): unique as the map
    names are."""
    return "overlays/" + map_name[: -len(".png")] + ".jpg"


def provenance(model_dir: str | os.PathLike[str], **extra) -> dict:
    """What produced an output: the model folder and its tensors' SHA-256, plus ``extra``."""
    from dualpatch import __version__
    from dualpatch.card import ModelCard

    return {
        "model": str(Path(model_dir).resolve()),
        "model_sha256": ModelCard.read(model_dir).safetensors_sha256,
        "dualpatch": __version__,
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items()},
    }


def write_predictions(model, files: Sequence[Path], out: str | os.PathLike[str],
                      force: bool = False, record: dict | None = None,
                      threshold: float | None = None, maps: str = "both",
                      finish: Callable[[Path], None] | None = None) -> int:  # fmt: skip
    """Score ``files`` with ``model`` into ``out`` (scores.csv, maps/, overlays/), batch by batch,
    with a verdict per image at ``threshold`` (none: empty verdicts); ``record`` (see
    ``provenance``) is written as ``provenance.json``. ``finish(folder)`` adds files (the review
    page) to the folder before it replaces ``out``."""
    from dualpatch.data import Sample
    from dualpatch.fileio import output_dir, write_json

    files = unique_inputs(files)
    names = map_names(files)
    scale = getattr(model, "map_scale_", None)
    if not scale:
        warnings.warn(
            "model predates a recorded map scale: each map PNG is scaled by its own maximum "
            "(refit to get maps comparable across images)",
            stacklevel=2,
        )
    samples = [Sample(str(f), Path(f), None, -1) for f in files]
    with output_dir(out, COMMAND, force, inputs=files, legacy=("scores.csv",)) as tmp:
        if record is not None:
            write_json(tmp / "provenance.json", {**record, "images": len(files)})
        with PredictionWriter(tmp, out, scale, threshold, maps) as writer:
            done = 0
            for batch, scores, amaps in model.predict_batches(samples):
                batch_names = names[done : done + len(batch)]
                writer.write_batch([s.image_path for s in batch], batch_names, scores, amaps)
                done += len(batch)
        if finish is not None:
            finish(tmp)
    return writer.count
