"""Runtimes that score images with a fitted model: the library itself (torch), or its exported
graph in onnxruntime or OpenVINO. All keep the scorer contract (``prediction.Scorer``, which
the fitted estimators keep too): the same input, the same outputs:

    scorer = open_scorer("models/dual", runtime="onnx", threads=2)
    scores, maps = scorer.score_images(images)  # (B, H, W, 3) uint8 RGB at scorer.image_size
                                                # -> (B,) float32, (B, H, W) float32

The exported file is ``DIR/model.onnx`` or ``DIR/model.xml`` (``dualpatch export``), or one given
as ``exported``; when it is missing, the model is exported into a temporary folder first. An
export whose files differ from its record (``FILE.json``), or that was built from other tensors or
other settings than the model's card now holds, is refused (``export_files.check_export``).
Runtimes are imported only when asked for.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch import prediction
from dualpatch.card import ModelCard
from dualpatch.errors import ConfigError, ModelFileError
from dualpatch.prediction import Batch, Prediction, Scorer

RUNTIMES = ("torch", "onnx", "openvino")


class TorchScorer:
    """The library's own scoring path (chunked k-NN, PatchCore re-weighting if fitted with it)."""

    runtime = "torch"

    def __init__(self, model_dir: str | os.PathLike[str], threads: int | None = None, weights=None):
        import torch

        from dualpatch.models import PatchCore

        if threads:
            torch.set_num_threads(threads)
        self.model = PatchCore.load(model_dir, weights)
        self.image_size = tuple(self.model.image_size)
        self.kind = self.model.kind

    def score_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.model.score_images(images)


def _exported_file(
    model_dir: Path, fmt: str, exported: str | os.PathLike[str] | None, weights: str | None
) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """The exported file to run, exported into a temporary folder if there is none yet."""
    from dualpatch.serving.export_files import default_export_path

    path = Path(exported) if exported else default_export_path(model_dir, fmt)
    if path.is_file():
        return path, None
    if exported:
        raise ModelFileError(f"{path}: exported model not found")
    warnings.warn(
        f"{model_dir}: no {path.name} yet; exporting to a temporary file "
        f"(run 'dualpatch export --model {model_dir} --format {fmt}' to keep one)",
        stacklevel=3,
    )
    from dualpatch.serving.export import export_model

    tmp = tempfile.TemporaryDirectory(prefix="dualpatch-export-")
    target = Path(tmp.name) / path.name
    return export_model(model_dir, fmt, target, weights=weights), tmp


class _ExportedScorer:
    """What both exported-graph runtimes share: find (or make) the file, load it, check that it
    belongs to the model and takes uint8 images. Subclasses load and run their runtime."""

    runtime = ""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        threads: int | None = None,
        exported: str | os.PathLike[str] | None = None,
        weights: str | None = None,
    ):
        from dualpatch.serving.export_files import check_export

        model_dir = Path(model_dir)
        card = ModelCard.read(model_dir)
        path, self._tmp = _exported_file(model_dir, self.runtime, exported, weights)
        check_export(card, path)  # the files by SHA-256, the settings against the card
        try:
            meta = self._load(path, threads)
        except Exception as exc:  # each runtime raises its own types for bad files
            raise ModelFileError(
                f"{path}: not a loadable {self.runtime} model ({_first_line(exc)})"
            ) from exc
        if meta.get("dualpatch_model_digest") != card.safetensors_sha256:
            raise ModelFileError(
                f"{path}: exported from other model tensors than {card.tensor_path} "
                f"(re-run dualpatch export)"
            )
        if meta.get("input_format", "uint8") != "uint8":
            raise ModelFileError(f"{path}: takes float input; export with the default uint8 input")
        self.image_size = card.image_size
        self.kind = card.kind
        self.path = path

    def _load(self, path: Path, threads: int | None) -> dict[str, str]:
        """Load ``path``; return the dualpatch metadata recorded in it."""
        raise NotImplementedError

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def score_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._run(prediction.check_images(images, self.image_size))


class OnnxScorer(_ExportedScorer):
    """The exported graph in onnxruntime (CPU)."""

    runtime = "onnx"

    def _load(self, path: Path, threads: int | None) -> dict[str, str]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # no busy-waiting between operators: on shared cores spinning threads slow everyone down
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, maps = self.session.run(["scores", "maps"], {"images": images})
        return scores, maps


class OpenVinoScorer(_ExportedScorer):
    """The exported graph in OpenVINO (CPU plugin, FP32 inference precision)."""

    runtime = "openvino"

    def _load(self, path: Path, threads: int | None) -> dict[str, str]:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        keys = ("dualpatch_model_digest", "input_format")
        meta = {
            k: model.get_rt_info(["dualpatch", k]).astype(str)
            for k in keys
            if model.has_rt_info(["dualpatch", k])
        }
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self._scores, self._maps = self.compiled.output("scores"), self.compiled.output("maps")
        return meta

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.compiled({"images": images})
        return np.asarray(out[self._scores]), np.asarray(out[self._maps])


def open_scorer(
    model_dir: str | os.PathLike[str],
    runtime: str = "torch",
    threads: int | None = None,
    exported: str | os.PathLike[str] | None = None,
    weights: str | None = None,
) -> TorchScorer | OnnxScorer | OpenVinoScorer:
    """A scorer (``prediction.Scorer``, with its ``runtime`` name and the model's ``kind``) for
    the model in ``model_dir`` running on ``runtime`` (torch, onnx, openvino)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    if runtime == "torch":
        if exported:
            raise ConfigError("an exported file runs on --runtime onnx or openvino, not torch")
        return TorchScorer(model_dir, threads, weights)
    if runtime != "torch":
        _check_import(runtime)
    if runtime == "onnx":
        return OnnxScorer(model_dir, threads, exported, weights)
    return OpenVinoScorer(model_dir, threads, exported, weights)


def load_for_scoring(
    model_dir: str | os.PathLike[str],
    runtime: str = "torch",
    weights: str | os.PathLike[str] | None = None,
    threads: int | None = None,
):
    """What ``predict`` and ``evaluate`` score with: the fitted model itself (torch), or a
    ``ScorerModel`` around its exported graph (onnx, openvino; torch is not imported)."""
    weights = str(weights) if weights else None
    if runtime == "torch":
        from dualpatch.models import PatchCore

        return PatchCore.load(model_dir, weights)
    return ScorerModel(open_scorer(model_dir, runtime, threads, weights=weights), model_dir)


def _check_import(runtime: str) -> None:
    module = {"onnx": "onnxruntime", "openvino": "openvino"}[runtime]
    try:
        __import__(module)
    except ImportError as exc:
        raise ConfigError(
            f"--runtime {runtime} needs the {module} package: pip install 'dualpatch[export]'"
        ) from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip()[:200] if lines else type(exc).__name__


class ScorerModel:
    """A scorer dressed as much like a fitted model as ``predict`` and ``evaluate`` need:
    ``predict_batches``, ``predict``, ``training_overlap``, ``image_size``, ``kind``,
    ``map_scale_`` and ``train_sha256_`` (both from model.json) and ``weights``."""

    def __init__(
        self, scorer: Scorer, model_dir: str | os.PathLike[str] | None, batch_size: int = 8
    ):
        self.scorer, self.batch_size, self.weights = scorer, batch_size, None
        self.image_size = tuple(scorer.image_size)
        self.kind = getattr(scorer, "kind", "")
        self.map_scale_ = None
        self.train_sha256_: set[str] = set()
        if model_dir is None:
            return
        card = ModelCard.read(model_dir)
        self.map_scale_ = card.map_scale
        self.train_sha256_ = set(card.train_sha256)

    def predict_batches(self, samples: Iterable[Any]) -> Iterator[Batch]:
        """(samples, image scores (B,), anomaly maps (B, H, W) float32) batch by batch, through
        the one predict loop (``prediction.predict_batches``)."""
        scorer = prediction.of_images(self.scorer)
        return prediction.predict_batches(scorer, list(samples), self.batch_size)

    def predict(self, samples: Iterable[Any]) -> Prediction:
        """Scores, maps and labels of ``samples`` (what ``PatchCore.predict`` returns)."""
        return prediction.collect(self.predict_batches(samples))

    def training_overlap(self, samples) -> list:
        """The samples whose image file is byte-identical to one the model was fit on."""
        from dualpatch.fileio import sha256_file

        seen = self.train_sha256_
        return [s for s in samples if seen and sha256_file(s.image_path) in seen]
