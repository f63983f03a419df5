"""``PatchCore`` (one normal bank) and ``DualPatchCore`` (normal + defect banks) estimators."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .data.base import Sample
from .data.crops import DefectCrop
from .data.duplicates import file_sha256
from .defaults import DEFECT_CORESET, DUAL_RULE, NORMAL_CORESET, NORMALIZATION
from .errors import ConfigError, DataError, ModelFileError, WeightsError
from .features import FEATURE_VERSION, FeatureExtractor, to_tensor
from .fileio import atomic_path, sha256_file, write_json
from .memory import MemoryBank
from .scoring import (
    DEFAULT_NUM_NEIGHBORS,
    DEFAULT_REWEIGHT_NEIGHBORS,
    Reweighting,
    check_scoring,
    patch_distances,
    score_patches,
)

FORMAT_VERSION = 1
#: Bump whenever coreset selection changes: shared normal banks of an older version are ignored.
BANK_VERSION = 1
STRIDE = 8  # both stage pairs put the feature grid at 1/8 of the input
#: The map scale is measured on at most this many training images, evenly spaced: scoring every
#: training patch against the bank grows as N^2 (hours at 20k images) for a display scale.
MAP_SCALE_IMAGES = 200

Progress = Callable[[str, int], Callable[[int], None]] | None


@dataclass
class Prediction:
    """Scores for a list of images: ``image_scores`` (N,), ``anomaly_maps`` (N, H, W) float32."""

    ids: list[str]
    image_scores: np.ndarray
    anomaly_maps: np.ndarray
    labels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _tqdm_progress(desc: str, total: int) -> Callable[[int], None]:
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal, so error lines stay lines of their own
    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return update


def _silent(desc: str, total: int) -> Callable[[int], None]:
    return lambda n: None


class PatchCore:
    """Single-bank PatchCore: nearest-neighbour distance of each test patch to normal patches.

    ``num_neighbors`` (k): a patch's distance to a bank is the mean distance to its k nearest
    entries (1: the nearest distance, as PatchCore and the dual reference code use).
    ``reweight``: image score by the PatchCore paper's re-weighting, over a neighbourhood of
    ``reweight_neighbors`` bank entries (single bank only).
    Parameters are stored as given; all work happens in ``fit``. Learned state: ``memory_``
    (the normal ``MemoryBank``) and ``grid_`` (feature grid of the input size).
    """

    kind = "single"

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        image_size: tuple[int, int] = (320, 128),
        coreset_ratio: float = NORMAL_CORESET,
        coreset_min: int = 1000,
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

    # -- parameters -------------------------------------------------------------------------
    PARAMS = (
        "backbone",
        "image_size",
        "coreset_ratio",
        "coreset_min",
        "projection_dim",
        "num_neighbors",
        "reweight",
        "reweight_neighbors",
        "blur_sigma",
        "normalization",
        "batch_size",
        "seed",
        "coreset_method",
        "knn",
        "max_memory",
    )

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.PARAMS}

    def check_params(self) -> None:
        """ConfigError unless the scoring parameters are usable together (called by ``fit``)."""
        check_scoring(
            getattr(self, "rule", None), self.reweight, self.num_neighbors, self.reweight_neighbors
        )

    def _bar(self, desc: str, total: int) -> Callable[[int], None]:
        if callable(self.progress):  # a caller's own display, e.g. the experiment runner's
            return self.progress(desc, total)
        return (_tqdm_progress if self.progress else _silent)(desc, total)

    @property
    def extractor_(self) -> FeatureExtractor:
        if getattr(self, "_extractor", None) is None:
            self._extractor = FeatureExtractor(self.backbone, self.weights, self.normalization)
        return self._extractor

    # -- features ---------------------------------------------------------------------------
    def _cache_key(self, sample: Sample) -> str:
        """Image content + everything that shapes its features (code version, backbone, weights)."""
        if getattr(self, "_key_prefix", None) is None:
            weights = sha256_file(self.weights) if self.weights else "package"
            self._key_prefix = json.dumps(
                [FEATURE_VERSION, self.backbone, list(self.image_size), self.normalization, weights]
            ).encode()
        h = hashlib.sha256(file_sha256(sample.image_path).encode())
        h.update(self._key_prefix)
        return h.hexdigest()

    def image_features(
        self,
        samples: Sequence[Sample],
        desc: str | None = "features",
        bar: Callable | None = None,
    ) -> torch.Tensor:
        """(N, h, w, D) patch features of full images at ``image_size``, cached on disk if asked.

        ``desc`` names the progress stage (None: no stage); ``bar`` takes the progress (images
        done) instead of a new stage."""
        cache = Path(self.cache_dir) if self.cache_dir else None
        out: list[torch.Tensor | None] = [None] * len(samples)
        paths = [cache / f"{self._cache_key(s)}.safetensors" for s in samples] if cache else []
        todo = []
        for i in range(len(samples)):
            if cache is not None:
                out[i] = _load_cached(paths[i])
                if out[i] is not None:
                    continue
            todo.append(i)
        bar = bar or (self._bar(desc, len(samples)) if desc else _silent("", 0))
        bar(len(samples) - len(todo))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            images = [samples[i].image(tuple(self.image_size)) for i in batch]
            feats = self.extractor_(to_tensor(images)).features.permute(0, 2, 3, 1).contiguous()
            for i, f in zip(batch, feats, strict=True):
                out[i] = f
                if cache is not None and not _save_cached(paths[i], f):
                    cache = None  # unwritable: warned once, carry on without it
            bar(len(batch))
        if not out:
            raise DataError("no images to extract features from")
        return torch.stack(out)  # type: ignore[arg-type]

    # -- fit / predict ----------------------------------------------------------------------
    def fit(self, normal: Iterable[Sample]) -> PatchCore:
        """Build the normal memory bank from defect-free images."""
        self.check_params()
        feats = self._fit_normal(list(normal))
        self.map_scale_ = self._map_scale(feats)
        _close(feats)
        return self

    def _fit_normal(self, normal: list[Sample]) -> Any:
        """Build ``memory_`` and record the training images; returns their (N, h, w, D) features:
        a tensor, or (bounded memory, shared bank) a view that reads batches on demand."""
        self._check_params()
        if not normal:
            raise DataError("no normal images to fit on")
        shared = self._shared_bank_path(normal)
        cached = _load_shared_bank(shared) if shared else None
        feats: Any
        if cached is not None:  # the same images and coreset settings: computed before
            self.memory_ = self._memory(self.coreset_ratio)
            self.memory_.bank_, self.grid_ = cached
            feats = _CachedImageFeatures(self, normal)
        elif self.max_memory is not None:
            from .spill import spilled_bank

            self.grid_, self.memory_, self.spill_, feats = spilled_bank(self, normal, self._bar)
        else:
            feats = self.image_features(normal, "normal features")
            self.grid_ = tuple(feats.shape[1:3])
            flat = feats.reshape(-1, feats.shape[-1])
            self.memory_ = self._bank(self.coreset_ratio, flat, "normal coreset")
        if shared and cached is None:
            _save_shared_bank(shared, self.memory_.bank_, self.grid_)
        self.train_sha256_: set[str] = set()
        self.record_training_images(s.image_path for s in normal)
        return feats

    def record_training_images(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Remember the SHA-256 of images the model was fit on (see ``training_overlap``)."""
        self.train_sha256_.update(file_sha256(p) for p in paths)

    def training_overlap(self, samples: Iterable[Sample]) -> list[Sample]:
        """The samples whose image file is byte-identical to one the model was fit on."""
        seen = getattr(self, "train_sha256_", set())
        return [s for s in samples if seen and file_sha256(s.image_path) in seen]

    def _map_scale(self, feats: torch.Tensor) -> float:
        """The largest anomaly-map value over the training images: a fixed scale for map images,
        so that an image's map PNG does not depend on which other images were scored with it.
        Past ``MAP_SCALE_IMAGES`` images, the largest over that many evenly spaced ones."""
        n = feats.shape[0]
        if n <= MAP_SCALE_IMAGES:
            batches = (
                feats[start : start + self.batch_size] for start in range(0, n, self.batch_size)
            )
        else:
            picked = np.linspace(0, n - 1, MAP_SCALE_IMAGES).round().astype(int).tolist()
            batches = (
                feats[picked[start : start + self.batch_size]]
                for start in range(0, len(picked), self.batch_size)
            )
        top = 0.0
        for batch in batches:
            amap, _ = self._score_features(batch)
            top = max(top, float(amap.max()))
        return top

    def _shared_bank_path(self, normal: Sequence[Sample]) -> Path | None:
        """Where the feature cache keeps the normal bank of these images and settings, so that
        the runs of an experiment that share a normal bank compute it once."""
        if not self.cache_dir:
            return None
        from . import memory

        settings = [
            self.coreset_ratio,
            self.coreset_min,
            self.projection_dim,
            self.seed,
            self.coreset_method,
            memory.APPROX_SAMPLE if self.coreset_method == "approx" else 0,
            str(self.max_memory),
            BANK_VERSION,
        ]
        keys = [self._cache_key(s) for s in normal]
        digest = hashlib.sha256(json.dumps([keys, settings], default=str).encode()).hexdigest()
        return Path(self.cache_dir) / "banks" / f"{digest}.safetensors"

    def _bank(self, ratio: float, flat: torch.Tensor, desc: str) -> MemoryBank:
        bank = self._memory(ratio)
        n = bank.target_size(flat.shape[0])
        picks = n - 1 if n < flat.shape[0] else 0  # a bank that keeps everything picks nothing
        bar = self._bar(desc, picks)
        bank.fit(flat, progress=bar)
        if picks == 0:
            bar(0)  # lets a display close the (empty) stage
        return bank

    def _check_params(self) -> None:
        """ConfigError for a large-data setting that could only fail after minutes of work."""
        from .memory import CORESETS, KNN_METHODS
        from .spill import parse_size

        if self.coreset_method not in CORESETS:
            raise ConfigError(
                f"unknown coreset_method {self.coreset_method!r} (choose from "
                f"{', '.join(CORESETS)})"
            )
        if self.knn not in KNN_METHODS:
            raise ConfigError(f"unknown knn {self.knn!r} (choose from {', '.join(KNN_METHODS)})")
        if self.knn.startswith("faiss"):  # found missing now, not when the fit is done
            from .memory import require_faiss

            require_faiss(self.knn)
        if self.max_memory is not None:
            parse_size(self.max_memory)

    def _memory(self, ratio: float) -> MemoryBank:
        return MemoryBank(
            ratio, self.coreset_min, self.projection_dim, self.seed, self.coreset_method, self.knn
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "memory_"):
            raise ConfigError(f"{type(self).__name__} is not fitted: call fit() or load() first")

    def predict_batches(
        self, samples: Sequence[Sample]
    ) -> Iterator[tuple[list[Sample], np.ndarray, np.ndarray]]:
        """(samples, image scores (B,), anomaly maps (B, H, W) float32) batch by batch: memory
        stays flat however many samples there are."""
        self._check_fitted()
        if not samples:
            raise DataError("no images to score")
        bar = self._bar("scoring", len(samples))
        for start in range(0, len(samples), self.batch_size):
            batch = list(samples[start : start + self.batch_size])
            if self.cache_dir:  # one test set scored by many models extracts its features once
                amap, score = self._score_features(self.image_features(batch, bar=bar))
            else:
                images = to_tensor([s.image(tuple(self.image_size)) for s in batch])
                amap, score = self._score_batch(images)
                bar(len(batch))
            yield batch, score.numpy().astype(np.float64), amap.numpy().astype(np.float32)

    def predict(self, samples: Iterable[Sample]) -> Prediction:
        """Image scores and anomaly maps (at ``image_size``) for each sample."""
        samples = list(samples)
        scores, maps = [], []
        for _, score, amap in self.predict_batches(samples):
            maps.append(amap)
            scores.append(score)
        labels = np.array([s.label for s in samples])
        return Prediction(
            [s.id for s in samples], np.concatenate(scores), np.concatenate(maps), labels
        )

    def _nearest(self, bank: MemoryBank, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, h, w) patch distances to ``bank``; (B, h*w) index of each patch's nearest entry."""
        b, h, w, d = feats.shape
        dist, idx = bank.query(feats.reshape(-1, d), self.num_neighbors)
        return patch_distances(dist).reshape(b, h, w), idx[:, 0].reshape(b, h * w)

    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly maps at ``image_size``, image scores) of a batch."""
        return self._score_features(self.extractor_(images).features.permute(0, 2, 3, 1))

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
        return {"normal_bank": self.memory_.bank_}

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.memory_ = self._memory(self.coreset_ratio)
        self.memory_.bank_ = tensors["normal_bank"]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` and ``model.json`` (config, versions, shapes, digest)."""
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self._tensors().items()}
        with atomic_path(path / "model.safetensors") as tmp:
            save_file(tensors, str(tmp))
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
            meta = {
                "format_version": FORMAT_VERSION,
                "class": type(self).__name__,
                "params": self.get_params(),
                "grid": list(self.grid_),
                "feature_dim": int(next(iter(tensors.values())).shape[1]),
                "tensors": {k: list(v.shape) for k, v in tensors.items()},
                "safetensors_sha256": digest,
                "versions": _versions(),
                "backbone_weights": self._weights_record(),
                "train_sha256": sorted(getattr(self, "train_sha256_", ())),
                "map_scale": getattr(self, "map_scale_", None),
            }
            if getattr(self, "threshold_", None) is not None:  # optional: older models lack it
                meta["threshold"] = self.threshold_
                meta["threshold_rule"] = getattr(self, "threshold_rule_", None)
            if getattr(self, "defect_crop_files_", None):
                meta["defect_crop_files"] = self.defect_crop_files_
            # The JSON is written while the tensor file is still temporary, so a crash between the
            # two renames leaves an old pair or a JSON whose digest exposes the mismatch.
            write_json(path / "model.json", meta)
        return path

    def _weights_record(self) -> dict[str, str | None]:
        """Which backbone weights the model was fit with: the file and its SHA-256."""
        from .backbones import default_weights_file

        if self.weights:
            return {"file": str(Path(self.weights).resolve()), "sha256": sha256_file(self.weights)}
        package = default_weights_file(self.backbone)
        return {"file": None, "sha256": sha256_file(package) if package else None}

    @classmethod
    def load(cls, path: str | os.PathLike[str], weights: str | None = None) -> PatchCore:
        """Load a model saved by ``save``; refuses tampered, truncated or mismatched files."""
        from safetensors.torch import load_file

        path = Path(path)
        meta_path, tensor_path = path / "model.json", path / "model.safetensors"
        for p in (meta_path, tensor_path):
            if not p.is_file():
                raise ModelFileError(f"{p}: model file not found")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(
                f"{meta_path}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
            ) from exc
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(
                f"{meta_path}: model format "
                f"{meta.get('format_version') if isinstance(meta, dict) else '?'}"
                f" is not supported by dualpatch {__version__} (expects {FORMAT_VERSION})"
            )
        classes = {c.__name__: c for c in (PatchCore, DualPatchCore)}
        if meta.get("class") not in classes:
            raise ModelFileError(f"{meta_path}: unknown model class {meta.get('class')!r}")
        target = classes[meta["class"]]
        if not issubclass(target, cls):
            raise ModelFileError(f"{meta_path}: holds a {meta['class']}, not a {cls.__name__}")
        digest = hashlib.sha256(tensor_path.read_bytes()).hexdigest()
        if digest != meta.get("safetensors_sha256"):
            raise ModelFileError(
                f"{tensor_path}: checksum does not match model.json "
                "(file tampered with or truncated)"
            )
        missing = [k for k in ("params", "grid", "feature_dim", "tensors") if k not in meta]
        if missing:
            raise ModelFileError(f"{meta_path}: missing key(s) {', '.join(missing)}")
        try:
            tensors = load_file(str(tensor_path))
        except Exception as exc:
            raise ModelFileError(f"{tensor_path}: unreadable safetensors ({exc})") from exc
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        if shapes != meta.get("tensors"):
            raise ModelFileError(f"{tensor_path}: tensor shapes {shapes} differ from model.json")
        _check_params(meta_path, meta["params"])
        weights = _matching_weights(meta_path, meta, weights)
        try:
            model = target(**_current_params(meta["params"]), weights=weights)
            model.check_params()
        except ConfigError as exc:
            raise ModelFileError(f"{meta_path}: {exc}") from exc
        except TypeError as exc:
            raise ModelFileError(
                f"{meta_path}: parameters do not fit {meta['class']} ({exc})"
            ) from exc
        model.image_size = tuple(model.image_size)
        try:
            model._set_tensors(tensors)
        except ModelFileError as exc:
            raise ModelFileError(f"{tensor_path}: {exc}") from exc
        model.grid_ = tuple(meta["grid"])
        if meta.get("threshold") is not None:
            model.threshold_ = float(meta["threshold"])
            model.threshold_rule_ = meta.get("threshold_rule")
        model.train_sha256_ = set(meta.get("train_sha256") or ())
        scale = meta.get("map_scale")
        model.map_scale_ = float(scale) if isinstance(scale, int | float) and scale > 0 else None
        if "defect_crop_files" in meta:
            model.defect_crop_files_ = meta["defect_crop_files"]
        expected = model.extractor_.dim
        if meta["feature_dim"] != expected:
            raise ModelFileError(
                f"{meta_path}: feature size {meta['feature_dim']} does not match backbone "
                f"{model.backbone} ({expected})"
            )
        return model


class DualPatchCore(PatchCore):
    """Dual-bank PatchCore: a normal bank plus a defect bank built from defect crops.

    A patch scores high when it is far from normal surface and near a known defect:
    ``rule="patch"`` takes the per-patch distance ratio and its maximum as image score;
    ``rule="seed"`` is the reference rule (max normal distance / max defect distance, map the
    per-patch ratio); ``rule="weighted"`` scales the normal distance by nearness to defects (see
    ``scoring.DUAL_RULES``). ``num_neighbors`` applies to both banks; ``reweight`` is refused.
    ``defect_patches="mask"`` keeps only crop patches that touch the defect mask (the crop's padding
    is normal surface and would otherwise enter the defect bank); ``"all"`` keeps every patch.
    ``defect_feature_augment`` (e.g. ``{"method": "interpolate", "n": 1000}``) adds synthetic rows
    made in feature space from the real defect rows before the coreset (see ``feature_augment``).
    Learned state: ``memory_`` (normal), ``defect_memory_``, ``defect_crop_files_`` (file and
    SHA-256 of each crop read from a crop folder, saved in model.json).
    """

    kind = "dual"
    PARAMS = PatchCore.PARAMS + (
        "defect_coreset", "rule", "eps", "defect_patches", "defect_feature_augment"
    )  # fmt: skip

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        image_size: tuple[int, int] = (320, 128),
        coreset_ratio: float = NORMAL_CORESET,
        defect_coreset: float = DEFECT_CORESET,
        rule: str = DUAL_RULE,
        eps: float = 1e-6,
        defect_patches: str = "mask",
        defect_feature_augment: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            backbone=backbone, image_size=image_size, coreset_ratio=coreset_ratio, **kwargs
        )
        self.defect_coreset = defect_coreset
        self.rule = rule
        self.eps = eps
        self.defect_patches = defect_patches
        self.defect_feature_augment = defect_feature_augment

    def fit(
        self, normal: Iterable[Sample], defects: Iterable[Sample | DefectCrop] = ()
    ) -> DualPatchCore:
        """Build the normal bank from ``normal`` and the defect bank from ``defects``.

        ``defects`` holds defective images with masks (``Sample``: the patches under the mask are
        cut from the whole image's feature map, so they see the same context as test patches) and/or
        ``DefectCrop`` cut-outs (each run through the backbone on its own, as in the reference).
        """
        defects = self._check_defects(defects)  # before the normal bank's minutes of work
        normal = list(normal)
        normal_feats = self._fit_normal(normal)
        # kept for fit_defects: the map scale and the training-image digests depend on both banks
        self._normal_samples = normal
        self._normal_sha256 = set(self.train_sha256_)
        return self._fit_defect_bank(defects, normal_feats)

    def fit_defects(self, defects: Iterable[Sample | DefectCrop]) -> DualPatchCore:
        """Rebuild the defect bank only, keeping the fitted normal bank (which no defect changes).

        For comparing defect sources (few-shot draws, synthetic sets) on one normal bank;
        the defect-bank parameters (``defect_coreset``, ``defect_feature_augment``, ...) may be
        changed before each call. Needs a model fitted by ``fit`` (not loaded).
        """
        self._check_fitted()
        if not hasattr(self, "_normal_samples"):
            raise ConfigError("fit_defects needs a model built by fit() in this session")
        return self._fit_defect_bank(self._check_defects(defects))

    def _check_defects(self, defects: Iterable[Sample | DefectCrop]) -> list:
        self.check_params()
        if self.defect_patches not in ("mask", "all"):
            raise ConfigError(f"unknown defect_patches {self.defect_patches!r} (mask or all)")
        if self.defect_feature_augment:
            from .feature_augment import check_settings

            check_settings(self.defect_feature_augment)
        defects = list(defects)
        if not defects:
            raise DataError("defect bank is empty: no defective images or defect crops given")
        return defects

    def _fit_defect_bank(
        self, defects: list, normal_feats: torch.Tensor | None = None
    ) -> DualPatchCore:
        images = [d for d in defects if isinstance(d, Sample)]
        crops = [d for d in defects if isinstance(d, DefectCrop)]
        # what a saved model shows it was built from: the digests of the crops read from files
        # (those crop_features keeps: at least one patch on each side)
        self.defect_crop_files_ = [
            {"file": c.source, "sha256": c.sha256, "mask_sha256": c.mask_sha256}
            for c in crops
            if c.sha256 and min(c.mask.shape) >= STRIDE
        ]
        feats = [self.defect_image_features(images)] if images else []
        if crops or not images:
            feats.append(self.crop_features(crops))
        feats = torch.cat(feats)
        if feats.shape[0] == 0:
            marked = [s.mask_path for s in images if s.mask_path is not None]
            example = f" (e.g. {marked[0]})" if marked else ""
            raise DataError(f"defect bank is empty: no defect pixels under the masks{example}")
        if self.defect_feature_augment:
            from .feature_augment import augment_defect_features

            def nearest_normal(rows: torch.Tensor) -> torch.Tensor:
                return self.memory_.bank_[self.memory_.query(rows)[1][:, 0]]

            extra = augment_defect_features(
                feats, self.defect_feature_augment, self.seed, nearest_normal
            )
            feats = torch.cat([feats, extra])
        self.defect_memory_ = self._bank(self.defect_coreset, feats, "defect coreset")
        self.train_sha256_ = set(self._normal_sha256)
        self.record_training_images(s.image_path for s in images)
        if normal_feats is None:  # fit_defects: from the feature cache where there is one
            normal_feats = self.image_features(self._normal_samples, "normal features")
        self.map_scale_ = self._map_scale(normal_feats)
        _close(normal_feats)
        return self

    def defect_image_features(self, samples: list[Sample]) -> torch.Tensor:
        """(M, D) features of the patches that touch each image's defect mask."""
        feats = self.image_features(samples, "defect features")
        rows = []
        for s, f in zip(samples, feats, strict=True):
            rows.append(f[mask_cells(s.mask(tuple(self.image_size)), f.shape[:2])])
        return torch.cat(rows)

    def crop_features(self, crops: list[DefectCrop]) -> torch.Tensor:
        """(M, D) features of defect patches, each crop run through the backbone at its own size."""
        kept = []
        for c in crops:
            h, w = c.mask.shape
            if h < STRIDE or w < STRIDE:
                warnings.warn(
                    f"defect crop from {c.source} is {w}x{h}, smaller than one patch "
                    f"({STRIDE}x{STRIDE}); skipped",
                    stacklevel=2,
                )
                continue
            kept.append(c)
        bar = self._bar("defect features", len(kept))
        rows = []
        for c in kept:
            f = self.extractor_(to_tensor(c.image)).features[0]  # (D, h, w)
            if self.defect_patches == "mask":
                cell = mask_cells(c.mask, f.shape[-2:])
            else:
                cell = torch.ones(f.shape[-2:], dtype=torch.bool)
            rows.append(f.permute(1, 2, 0)[cell])
            bar(1)
        if not rows or sum(len(r) for r in rows) == 0:
            raise DataError("defect bank is empty: no usable defects (check the masks)")
        return torch.cat(rows)

    def _score_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normal_dist, _ = self._nearest(self.memory_, feats)
        defect_dist, _ = self._nearest(self.defect_memory_, feats)
        size = tuple(self.image_size)
        return score_patches(normal_dist, size, self.blur_sigma, defect_dist, self.rule, self.eps)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"normal_bank": self.memory_.bank_, "defect_bank": self.defect_memory_.bank_}

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super()._set_tensors(tensors)
        if "defect_bank" not in tensors:
            raise ModelFileError("dual model holds no defect_bank tensor")
        self.defect_memory_ = self._memory(self.defect_coreset)
        self.defect_memory_.bank_ = tensors["defect_bank"]


def _current_params(params: dict[str, Any]) -> dict[str, Any]:
    """Saved parameters in today's names. Before ``reweight_neighbors`` existed, ``num_neighbors``
    was the re-weighting's neighbourhood and every bank distance was the nearest one (k = 1)."""
    params = dict(params)
    if "reweight_neighbors" not in params and "num_neighbors" in params:
        params["reweight_neighbors"] = params.pop("num_neighbors")
        params["num_neighbors"] = 1
    return params


def _tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _save_cached(path: Path, features: torch.Tensor) -> bool:
    """One cache entry, written atomically, with the SHA-256 of its values in the metadata;
    False (after one warning) if the cache cannot be written."""
    import safetensors
    from safetensors.torch import save_file

    features = features.detach().contiguous().clone()
    try:
        with atomic_path(path) as tmp:
            save_file(
                {"features": features}, str(tmp), metadata={"sha256": _tensor_digest(features)}
            )
    except (OSError, safetensors.SafetensorError) as exc:  # full or read-only disk: no cache
        reason = getattr(exc, "strerror", None) or _first_words(exc)
        warnings.warn(
            f"{path.parent}: feature cache not writable ({reason}); carrying on without it "
            "(--no-cache or DUALPATCH_CACHE= turns it off)",
            stacklevel=3,
        )
        return False
    return True


def _first_words(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _CachedImageFeatures:
    """(N, h, w, D) features of images, read batch by batch through the feature cache."""

    def __init__(self, model: PatchCore, samples: list[Sample]):
        self.model, self.samples = model, samples
        self.shape = (len(samples),)

    def __getitem__(self, rows: slice | list[int]) -> torch.Tensor:
        samples = self.samples[rows] if isinstance(rows, slice) else [self.samples[i] for i in rows]
        return self.model.image_features(samples, "normal features")


def _close(feats: Any) -> None:
    """Release a feature view that holds files (a temporary spill store)."""
    if hasattr(feats, "close"):
        feats.close()


def _save_shared_bank(path: Path, bank: torch.Tensor, grid: tuple[int, int]) -> None:
    import safetensors
    from safetensors.torch import save_file

    bank = bank.detach().contiguous()
    meta = {"sha256": _tensor_digest(bank), "grid": json.dumps(list(grid))}
    try:
        with atomic_path(path) as tmp:
            save_file({"bank": bank}, str(tmp), metadata=meta)
    except (OSError, safetensors.SafetensorError):
        pass  # an unwritable cache (the feature cache warns about it): the bank is not shared


def _load_shared_bank(path: Path) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """A shared normal bank and its grid, or None (and the file deleted) if damaged in any way."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            bank = f.get_tensor("bank")
        grid = tuple(json.loads(meta["grid"]))
        if bank.ndim == 2 and meta.get("sha256") == _tensor_digest(bank) and len(grid) == 2:
            return bank, grid  # type: ignore[return-value]
    except Exception:  # any damage at all: recompute
        pass
    path.unlink(missing_ok=True)
    return None


def _load_cached(path: Path) -> torch.Tensor | None:
    """A cache entry's (h, w, D) features, or None (and the entry deleted) if it is missing,
    truncated, unreadable or its values do not match their recorded SHA-256: never trusted."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            digest = (f.metadata() or {}).get("sha256")
            features = f.get_tensor("features")
        if (
            features.ndim == 3
            and features.dtype == torch.float32
            and digest == _tensor_digest(features)
        ):
            return features
    except Exception:  # any damage at all: recompute
        pass
    path.unlink(missing_ok=True)
    return None


def mask_cells(mask: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """(h, w) bool: the feature-grid cells that hold at least one defect pixel of ``mask``."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.adaptive_max_pool2d(m, tuple(grid))[0, 0] > 0


def _check_params(meta_path: Path, params: Any) -> None:
    """ModelFileError unless the hand-editable parameters of model.json are usable."""
    from .limits import check_size

    if not isinstance(params, dict):
        raise ModelFileError(f"{meta_path}: 'params' is not a mapping")
    size = params.get("image_size")
    if not (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in size)
    ):
        raise ModelFileError(f"{meta_path}: image_size is {size!r}; expected [H, W]")
    try:
        check_size(size[0], size[1], f"image_size {list(size)}")
    except ConfigError as exc:
        raise ModelFileError(f"{meta_path}: {exc}") from None
    whole = {"batch_size": 1, "coreset_min": 1, "projection_dim": 1, "num_neighbors": 1}
    for key, low in whole.items():
        value = params.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ModelFileError(
                f"{meta_path}: {key} is {value!r}; expected a whole number >= {low}"
            )


def _matching_weights(meta_path: Path, meta: dict, weights: str | None) -> str | None:
    """The backbone weights to load the model with: ``weights`` if given, else the file the model
    was fit with; ModelFileError if they are not the weights (by SHA-256) the model was fit with.

    A recorded path is only ever hashed if it is a regular file, and only used if its SHA-256 is
    the recorded one, so a model file cannot make dualpatch read anything but those weights."""
    from .backbones import default_weights_file

    record = meta.get("backbone_weights")
    if not isinstance(record, dict) or not record.get("sha256"):
        return weights  # a model saved before dualpatch recorded its weights
    want, fitted = str(record["sha256"]), record.get("file")
    if weights is not None:
        if not Path(weights).is_file():
            raise WeightsError(f"{weights}: weights file not found")
        got = sha256_file(weights)
        if got != want:
            was = fitted or "the backbone's package weights"
            raise WeightsError(
                f"{weights}: sha256 {got[:12]}... differs from the weights this model was fit "
                f"with ({was}, sha256 {want[:12]}...); scores would be meaningless"
            )
        return weights
    if fitted is None:
        package = default_weights_file(meta.get("params", {}).get("backbone", ""))
        if package is not None and sha256_file(package) != want:
            raise WeightsError(
                f"{meta_path}: the installed package weights ({package}) differ from those the "
                "model was fit with; reinstall the pinned version or refit"
            )
        return None
    if Path(fitted).is_file() and sha256_file(fitted) == want:
        return fitted
    raise WeightsError(
        f"{meta_path}: fit used backbone weights {fitted} (sha256 {want[:12]}...), which are "
        "missing or changed; pass --weights FILE with those weights"
    )


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"dualpatch": __version__, "python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "safetensors", "efficientnet-lite-pytorch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
