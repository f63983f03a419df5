"""``predict``'s output, written batch by batch: ``scores.csv`` and one anomaly-map PNG per image.

Memory stays flat and time linear in the number of images: nothing is kept once written, and a map
PNG's grey levels come from a scale fixed in the model at fit time (``map_scale_``: the largest
map value over the training images is grey level 128), never from the other images scored with
it. The folder appears whole (``fileio.output_dir``), so an interrupted or failed run leaves the
old output as it was.

``PredictionWriter`` is the piece other front ends (e.g. a distributed ``predict``) reuse:
``write_batch(files, names, scores, maps)`` with the names from ``map_names``.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataError

COMMAND = "predict"
#: grey level of the largest anomaly-map value seen on the training images
TRAINING_MAX_GREY = 128


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


class PredictionWriter:
    """Writes ``scores.csv`` rows and map PNGs into ``folder`` as batches come in.

    ``shown`` is the folder the user asked for (``folder`` is usually its temporary twin): error
    messages name the file there. Use as a context manager; ``count`` is the rows written.
    """

    def __init__(self, folder: str | os.PathLike[str], shown: str | os.PathLike[str],
                 scale: float | None):  # fmt: skip
        self.folder, self.shown, self.scale = Path(folder), Path(shown), scale
        self.count = 0
        self._file = None

    def __enter__(self) -> PredictionWriter:
        self._file = self._guard("scores.csv", lambda: open(  # noqa: SIM115
            self.folder / "scores.csv", "w", newline="", encoding="utf-8"))  # fmt: skip
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._guard("scores.csv", lambda: self._csv.writerow(["image", "map", "score"]))
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
        """One batch: a map PNG per image under ``maps/`` and its ``scores.csv`` row."""
        from PIL import Image

        for file, name, score, amap in zip(files, names, scores, maps, strict=True):
            target = self.folder / "maps" / name
            rel = f"maps/{name}"

            def save(target=target, amap=amap) -> None:
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(map_to_uint8(amap, self.scale)).save(target, format="PNG")

            self._guard(rel, save)
            self._guard("scores.csv", lambda f=file, s=score, r=rel: self._csv.writerow(
                [str(f), r, f"{float(s):.8g}"]))  # fmt: skip
            self.count += 1


def provenance(model_dir: str | os.PathLike[str], **extra) -> dict:
    """What produced an output: the model folder and its tensors' SHA-256, plus ``extra``."""
    from . import __version__
    from .card import ModelCard

    return {
        "model": str(Path(model_dir).resolve()),
        "model_sha256": ModelCard.read(model_dir).safetensors_sha256,
        "dualpatch": __version__,
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items()},
    }


def write_predictions(model, files: Sequence[Path], out: str | os.PathLike[str],
                      force: bool = False, record: dict | None = None) -> int:  # fmt: skip
    """Score ``files`` with ``model`` into ``out`` (scores.csv, maps/), batch by batch;
    ``record`` (see ``provenance``) is written as ``provenance.json``."""
    from .data import Sample
    from .fileio import output_dir, write_json

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
        with PredictionWriter(tmp, out, scale) as writer:
            done = 0
            for batch, scores, maps in model.predict_batches(samples):
                batch_names = names[done : done + len(batch)]
                writer.write_batch([s.image_path for s in batch], batch_names, scores, maps)
                done += len(batch)
    return writer.count
