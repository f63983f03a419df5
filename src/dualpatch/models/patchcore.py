"""``PatchCore``: one memory bank of normal patches; a test patch's score is its distance to
the bank. Building the banks (``banks``), checking parameters (``params``), the feature cache and
persistence live in their own modules; progress goes out as events (``dualpatch.events``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualpatch import prediction
from dualpatch.bank import feature_cache
from dualpatch.bank.coverage import leave_image_out, missing_content, summarise
from dualpatch.bank.feature_cache import FeatureSource, key_prefix
from dualpatch.bank.memory import MemoryBank
from dualpatch.data.base import Sample
from dualpatch.defaults import (
    BACKBONE,
    CORESET_MIN,
    CORESET_ROWS,
    IMAGE_SIZE,
    NORMAL_CORESET,
    NORMALIZATION,
)
from dualpatch.errors import ConfigError, DataError
from dualpatch.events import open_stage
from dualpatch.features.extractor import FeatureExtractor, to_tensor
from dualpatch.fileio import sha256_file
from dualpatch.models import banks
from dualpatch.models.params import check_scoring_params
from dualpatch.models.persistence import load_model, register, save_model
from dualpatch.prediction import Prediction, check_images
from dualpatch.scoring import (
    DEFAULT_NUM_NEIGHBORS,
    DEFAULT_REWEIGHT_NEIGHBORS,
    Reweighting,
    gated_scores,
    patch_distances,
    score_patches,
)

#: the smallest level of the image-level check (training images without any difference)
GATE_FLOOR = 1e-12


@register
class PatchCore:
    """Single-bank PatchCore: nearest-neighbour distance of each test patch to normal patches.

    ``num_neighbors`` (k): a patch's distance to a bank is the mean distance to its k nearest
    entries (1: the nearest distance, as PatchCore and the dual reference code use).
    ``reweight``: image score by the PatchCore paper's re-weighting, over a neighbourhood of
    ``reweight_neighbors`` bank entries (single bank only).
    Parameters are stored as given; all work happens in ``fit``. Learned state: ``memory_``
    (the normal ``MemoryBank``), ``grid_`` (feature grid of the input size) and ``threshold_``,
    the verdict threshold (an image scoring above it is flagged): None until ``threshold.calibrate``
    sets it from held-out normal images (``dualpatch fit`` does by default), with
    ``threshold_record_`` saying how it was set.
    ``image_gate`` (default on): the image-level check of ``bank.coverage`` folded into the image
    score, so that a frame lacking what every normal image holds (blank, blurred, turned) is
    flagged even where each of its patches resembles some normal patch. Learned with it:
    ``gate_summaries_`` (M, R, D) at fit; ``gate_level_`` (missing content of normal images) and
    ``gate_scale_`` (the score it maps to), None until ``threshold.calibrate`` sets them from
    held-out normal images (the check is off until then), and ``gate_record_``.
    """

    kind = "single"

    def __init__(
        self,
        backbone: str = BACKBONE,
        image_size: tuple[int, int] = IMAGE_SIZE,
        coreset_ratio: float = NORMAL_CORESET,
        coreset_min: int = CORESET_MIN,
        projection_dim: int = 128,
        num_neighbors: int = DEFAULT_NUM_NEIGHBORS,
        reweight: bool = False,
        reweight_neighbors: int = DEFAULT_REWEIGHT_NEIGHBORS,
        blur_sigma: float = 4.0,
        normalization: str = NORMALIZATION,
        weights: str | None = None,
        batch_size: int = 8,
        seed: int = 0,
        cache_dir: str | None = None,
        progress: bool = True,
        coreset_method: str = "greedy",
        knn: str = "torch",
        max_memory: str | int | None = None,
        image_gate: bool = True,
        coreset_rows: int | None = CORESET_ROWS,
        bank_dtype: str = "float32",
        search_dim: int | None = None,
    ):
        self.backbone = backbone
        self.image_size = image_size
        self.coreset_ratio = coreset_ratio
        self.coreset_min = coreset_min
        self.projection_dim = projection_dim
        self.num_neighbors = num_neighbors
        self.reweight = reweight
        self.reweight_neighbors = reweight_neighbors
        self.blur_sigma = blur_sigma
        self.normalization = normalization
        self.weights = weights
        self.batch_size = batch_size
        self.seed = seed
        self.cache_dir = cache_dir
        self.progress = progress
        self.coreset_method = coreset_method
        self.knn = knn
        self.max_memory = max_memory
        self.image_gate = image_gate
        self.coreset_rows = coreset_rows
        self.bank_dtype = bank_dtype
        self.search_dim = search_dim

    # -- parameters -------------------------------------------------------------------------
    PARAMS = (
        "backbone", "image_size", "coreset_ratio", "coreset_min", "projection_dim",
        "num_neighbors", "reweight", "reweight_neighbors", "blur_sigma", "normalization",
        "batch_size", "seed", "coreset_method", "knn", "max_memory", "image_gate",
        "coreset_rows", "bank_dtype", "search_dim",
    )  # fmt: skip

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.PARAMS}

    def check_params(self) -> None:
        """ConfigError unless the scoring parameters are usable together (called by ``fit``)."""
        check_scoring_params(self)

    def _bar(self, desc: str, total: int) -> Callable[[int], None]:
        return open_stage(self.progress, desc, total)

    @property
    def extractor_(self) -> FeatureExtractor:
        if getattr(self, "_extractor", None) is None:
            self._extractor = FeatureExtractor(self.backbone, self.weights, self.normalization)
        return self._extractor

    # -- features ---------------------------------------------------------------------------
    def feature_source(self) -> FeatureSource:
        """Where this estimator's features come from (backbone, input size, batch size, cache,
        key prefix, progress): built once per setting of those parameters and handed to the
        helpers below the estimator (cache, spill store, defect features, Ray fit)."""
        size = (self.image_size[0], self.image_size[1])
        # id: a copy of the estimator builds its own source, whose extractor is the copy's
        settings = (id(self), self.backbone, size, self.normalization, self.weights,
                    self.batch_size, self.cache_dir, self.progress)  # fmt: skip
        built = getattr(self, "_source", None)
        if built is None or built[0] != settings:
            prefix = key_prefix(self.backbone, size, self.normalization, self.weights)
            source = FeatureSource(
                lambda: self.extractor_, size, self.batch_size, self.cache_dir, prefix,
                self.progress,
            )  # fmt: skip
            self._source = built = (settings, source)
        return built[1]

    def _cache_key(self, sample: Sample) -> str:
        """Image content + everything that shapes its features (code version, backbone, weights)."""
        return self.feature_source().key(sample)

    def image_features(
        self,
        samples: Sequence[Sample],
        desc: str | None = "features",
        bar: Callable | None = None,
    ) -> torch.Tensor:
        """(N, h, w, D) patch features of full images at ``image_size``, cached on disk if asked.

        ``desc`` names the progress stage (None: no stage); ``bar`` takes the progress (images
        done) instead of a new stage."""
        return self.feature_source().features(samples, desc, bar)

    # -- fit / predict ----------------------------------------------------------------------
    def fit(self, normal: Iterable[Sample]) -> PatchCore:
        """Build the normal memory bank from defect-free images."""
        self.check_params()
        self.threshold_ = self.threshold_record_ = None  # calibrate() sets them, if asked
        feats = self._fit_normal_bank(list(normal))
        if self.image_gate:
            self.fit_gate(feats)
        self.map_scale_ = banks.map_scale(self, feats)
        feature_cache.close_features(feats)
        return self

    def _fit_normal_bank(self, normal: list[Sample]) -> Any:
        """Fit the normal bank (``banks.normal_bank``) and set it; returns the images' features."""
        fitted = banks.normal_bank(self, normal)
        self.memory_, self.grid_, feats = fitted.memory, fitted.grid, fitted.features
        if fitted.spill is not None:
            self.spill_ = fitted.spill
        self.train_sha256_ = set()
        self.record_training_images(s.image_path for s in normal)
        return feats

    def record_training_images(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Remember the SHA-256 of images the model was fit on (see ``training_overlap``)."""
        self.train_sha256_.update(sha256_file(p) for p in paths)

    def training_overlap(self, samples: Iterable[Sample]) -> list[Sample]:
        """The samples whose image file is byte-identical to one the model was fit on."""
        seen = getattr(self, "train_sha256_", set())
        return [s for s in samples if seen and sha256_file(s.image_path) in seen]

    def _memory(self, ratio: float) -> MemoryBank:
        return MemoryBank(
            ratio, self.coreset_min, self.projection_dim, self.seed, self.coreset_method, self.knn,
            self.coreset_rows, self.bank_dtype, self.search_dim,
        )  # fmt: skip

    def _check_fitted(self) -> None:
        if not hasattr(self, "memory_"):
            raise ConfigError(f"{type(self).__name__} is not fitted: call fit() or load() first")

    def _scoring_stage(self, total: int) -> Callable[[], Callable[[int], None]]:
        """The "scoring" progress stage over ``total`` images, opened by the first batch (a call
        refused before any work opens none)."""
        return functools.cache(lambda: self._bar("scoring", total))

    def _features_of(self, batch: list[Sample], bar: Callable[[int], None]) -> torch.Tensor:
        """(B, h, w, D) patch features of ``batch``: from the feature cache when there is one (one
        test set scored by many models extracts its features once), else the backbone's."""
        if self.cache_dir:
            return self.image_features(batch, bar=bar)
        size = (self.image_size[0], self.image_size[1])
        feats = self._image_features(to_tensor(np.stack([s.image(size) for s in batch])))
        bar(len(batch))
        return feats

    def _image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, h, w, D) patch features of a (B, 3, H, W) image tensor, by the backbone."""
        return self.extractor_(images).features.permute(0, 2, 3, 1)

    def _feature_batches(self, samples: Sequence[Sample]) -> Iterator[torch.Tensor]:
        """(B, h, w, D) features of ``samples`` batch by batch, with one progress stage."""
        self._check_fitted()
        stage = self._scoring_stage(len(samples))
        for batch in prediction.batches(samples, self.batch_size):
            yield self._features_of(batch, stage())

    def score_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image scores (B,) float32, anomaly maps (B, H, W) float32) of a (B, H, W, 3) uint8 RGB
        batch at ``image_size``: the scorer contract (``prediction.Scorer``) that the ONNX and
        OpenVINO runtimes keep too."""
        self._check_fitted()
        images = check_images(images, (self.image_size[0], self.image_size[1]))
        with torch.no_grad():
            amap, score = self._score_gated(self._image_features(to_tensor(images)))
        return score.numpy().astype(np.float32), amap.numpy().astype(np.float32)

    def _batch_scorer(self, total: int) -> prediction.BatchScore:
        """Scores a batch of samples for ``prediction.predict_batches``: the images' features
        (cached or extracted), then the same scoring as ``score_images``."""
        stage = self._scoring_stage(total)

        def score(batch: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
            amap, scores = self._score_gated(self._features_of(batch, stage()))
            return scores.numpy(), amap.numpy()

        return score

    def predict_batches(
        self, samples: Iterable[Sample]
    ) -> Iterator[tuple[list[Sample], np.ndarray, np.ndarray]]:
        """(samples, image scores (B,), anomaly maps (B, H, W) float32) batch by batch, through
        the one predict loop (``prediction.predict_batches``)."""
        self._check_fitted()
        samples = list(samples)
        yield from prediction.predict_batches(
            self._batch_scorer(len(samples)), samples, self.batch_size
        )

    def bank_distances(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """(N, h, w) patch distances of ``samples`` to each bank, by bank ("normal", and
        "defect" for a dual model): what the scoring rules take, for calibrating on them."""
        found: dict[str, list[torch.Tensor]] = {}
        for feats in self._feature_batches(samples):
            for name, bank in self._banks().items():
                found.setdefault(name, []).append(self._nearest(bank, feats)[0])
        return {name: torch.cat(parts) for name, parts in found.items()}

    def _banks(self) -> dict[str, MemoryBank]:
        return {"normal": self.memory_}

    def predict(self, samples: Iterable[Sample]) -> Prediction:
        """Image scores and anomaly maps (at ``image_size``) for each sample."""
        return prediction.collect(self.predict_batches(samples))

    def _nearest(self, bank: MemoryBank, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, h, w) patch distances to ``bank``; (B, h*w) index of each patch's nearest entry."""
        b, h, w, d = feats.shape
        dist, idx = bank.query(feats.reshape(-1, d), self.num_neighbors)
        return patch_distances(dist).reshape(b, h, w), idx[:, 0].reshape(b, h * w)

    def _score_gated(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly maps, image scores with the image-level check) of (B, h, w, D) features."""
        amap, score = self._score_features(feats)
        if getattr(self, "gate_level_", None) is None:  # off until calibrated
            return amap, score
        missing = missing_content(feats, self.gate_summaries_)
        return amap, gated_scores(score, missing, self.gate_level_, self.gate_scale_)

    # -- the image-level check (bank.coverage) ----------------------------------------------
    def fit_gate(self, feats: Any) -> None:
        """Summarise the training images (``feats``, (N, h, w, D)) and measure the missing content
        of up to 32 of them leave-image-out (``gate_record_``). The check's level and scale
        come from held-out normal images (``threshold.calibrate``, which ``dualpatch fit`` runs):
        until then it is off, since only a rule's own scores of unseen normal images say which
        score its level should map to."""
        self.gate_summaries_ = summarise(feats)
        self.gate_level_ = self.gate_scale_ = None
        left_out = leave_image_out(feats, self.gate_summaries_)
        self.gate_record_ = {"method": "summaries only: set by threshold.calibrate",
                             "leave_image_out": float(left_out.max()) if left_out.size else None,
                             "leave_image_out_images": int(left_out.size)}  # fmt: skip

    def set_gate(self, level: float, scale: float, record: dict[str, Any]) -> None:
        """Set the image-level check's level and scale; a level that cannot be measured (one
        training image, or images without differences) is floored, so every difference flags."""
        record = dict(record, summary_patches=int(self.gate_summaries_.shape[1]),
                      summarised_images=int(self.gate_summaries_.shape[0]))  # fmt: skip
        if not np.isfinite(level) or level < GATE_FLOOR:
            level, record["floored"] = GATE_FLOOR, True
        if not np.isfinite(scale) or scale <= 0:
            raise DataError(f"image-level check: score scale {scale!r} is not a positive number")
        self.gate_level_, self.gate_scale_, self.gate_record_ = float(level), float(scale), record

    def missing_content(self, samples: Sequence[Sample]) -> np.ndarray:
        """(N,) missing content of ``samples`` against the training summaries (bank.coverage)."""
        parts = [
            missing_content(feats, self.gate_summaries_) for feats in self._feature_batches(samples)
        ]
        return torch.cat(parts).double().numpy()

    def _score_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly maps, image scores) of (B, h, w, D) patch features."""
        dist, idx = self._nearest(self.memory_, feats)
        reweighting = None
        if self.reweight:
            b, h, w, d = feats.shape
            flat = feats.reshape(b, h * w, d)
            reweighting = Reweighting(flat, idx, self.memory_.bank_, self.reweight_neighbors)
        return score_patches(dist, tuple(self.image_size), self.blur_sigma, reweighting=reweighting)

    # -- persistence ------------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"normal_bank": self.memory_.bank_}
        if getattr(self, "gate_level_", None) is not None:  # (M, R, D) stored as rows
            tensors["gate_summaries"] = self.gate_summaries_.reshape(
                -1, self.memory_.bank_.shape[1]
            )
        return tensors

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.memory_ = self._memory(self.coreset_ratio)
        self.memory_.bank_ = tensors["normal_bank"]
        self.gate_summaries_ = tensors.get("gate_summaries")  # shaped by the card's gate record

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` and ``model.json`` (config, versions, shapes, digest)."""
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], weights: str | None = None) -> PatchCore:
        """Load a model saved by ``save``; refuses tampered, truncated or mismatched files.
        A ``PatchCore.load`` of a dual model gives the ``DualPatchCore`` it holds."""
        return load_model(cls, path, weights)

    # -- learning on the line (models/online.py) -------------------------------------------
    def add_normal(
        self,
        images: Sequence[Sample | str | os.PathLike[str]],
        force: bool = False,
        held_out: Sequence[Sample | str | os.PathLike[str]] | None = None,
    ) -> Any:
        """Add confirmed-good images' patches to the normal bank, no refit; the guard refuses an
        image far above the threshold unless ``force``. Returns an ``online.Update``."""
        from dualpatch.models.online import add_normal

        return add_normal(self, images, force=force, held_out=held_out)

    def add_defects(
        self,
        images: Sequence[Sample | str | os.PathLike[str]],
        masks: Sequence[str | os.PathLike[str] | None] | None = None,
        held_out: Sequence[Sample | str | os.PathLike[str]] | None = None,
    ) -> Any:
        """Add confirmed defects' patches to the defect bank (a dual model's), no refit; without
        a mask, an image's patches above the novelty level. Returns an ``online.Update``."""
        from dualpatch.models.online import add_defects

        return add_defects(self, images, masks, held_out=held_out)
