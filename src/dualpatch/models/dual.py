"""``DualPatchCore``: a normal bank plus a defect bank; a patch scores high when it is far
from normal surface and near a known defect (rules in ``scoring.DUAL_RULES``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from dualpatch.bank.feature_cache import close_features
from dualpatch.data.base import Sample
from dualpatch.data.crops import DefectCrop
from dualpatch.defaults import BACKBONE, DEFECT_CORESET, DUAL_RULE, IMAGE_SIZE, NORMAL_CORESET
from dualpatch.errors import ConfigError, DataError, ModelFileError
from dualpatch.models import banks
from dualpatch.models.defect_features import (
    crop_features,
    crop_file_records,
    defect_image_features,
    defect_rows,
)
from dualpatch.models.patchcore import PatchCore
from dualpatch.models.persistence import register
from dualpatch.scoring import score_patches

#: the smallest novelty level tau: a bank whose normal images repeat each other exactly gets this
MIN_NOVELTY_LEVEL = 1e-12


@register
class DualPatchCore(PatchCore):
    """Dual-bank PatchCore: a normal bank plus a defect bank built from defect crops.

    A patch scores high when it is far from normal surface and near a known defect. The default
    ``rule="guarded"`` raises a patch's normal distance d_n where it is nearer a known defect than
    normal surface, may damp it below the novelty level tau, and never lowers it at or above tau
    (the scoring contract, ``scoring.DUAL_RULES``). The older rules are kept by name and are
    unsafe for novelties (a frame far from both banks can pass): ``rule="patch"`` takes the
    per-patch distance ratio and its maximum as image score; ``rule="seed"`` is the reference rule
    (max normal distance / max defect distance, map the per-patch ratio); ``rule="weighted"``
    scales the normal distance by nearness to defects. ``num_neighbors`` applies to both banks;
    ``reweight`` is refused.
    ``defect_patches="mask"`` keeps only crop patches that touch the defect mask (the crop's padding
    is normal surface and would otherwise enter the defect bank); ``"all"`` keeps every patch.
    ``defect_feature_augment`` (e.g. ``{"method": "interpolate", "n": 1000}``) adds synthetic rows
    made in feature space from the real defect rows before the coreset (see ``feature_augment``).
    Learned state: ``memory_`` (normal), ``defect_memory_``, ``defect_crop_files_`` (file and
    SHA-256 of each crop read from a crop folder, saved in model.json), ``novelty_level_`` (tau,
    in d_n units) with ``novelty_level_record_`` (how it was measured: leave-image-out on the
    training normals at ``fit``, or held-out normals by ``threshold.calibrate``), ``threshold_``.
    """

    kind = "dual"
    PARAMS = PatchCore.PARAMS + (
        "defect_coreset", "rule", "eps", "defect_patches", "defect_feature_augment"
    )  # fmt: skip

    # PatchCore's first three parameters are repeated on purpose (duplicates reports them): they
    # keep the positional order DualPatchCore(backbone, image_size, coreset_ratio, defect_coreset,
    # rule) that callers may use, and show the settings most often changed in the signature.
    # The rest pass through **kwargs to PatchCore's __init__, their one definition; get_params
    # reads PARAMS (not the signature, as scikit-learn would), so it still returns every one.
    def __init__(
        self,
        backbone: str = BACKBONE,
        image_size: tuple[int, int] = IMAGE_SIZE,
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
        self.threshold_ = self.threshold_record_ = None  # calibrate() sets them, if asked
        normal_feats = self._fit_normal_bank(normal)
        # tau depends on the normal bank only: measured once, before any rule scores a patch
        level, measured = banks.leave_image_out_level(self, normal_feats)
        self.set_novelty_level(
            level, {"method": "leave-image-out", "images": measured,
                    "quantile": banks.NOVELTY_QUANTILE},
        )  # fmt: skip
        if self.image_gate:
            self.fit_gate(normal_feats)
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
            from dualpatch.features.augment import check_settings

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
        self.defect_crop_files_ = crop_file_records(crops)
        feats = defect_rows(self, images, crops)
        self.defect_memory_ = banks.coreset_bank(self, self.defect_coreset, feats, "defect coreset")
        self.train_sha256_ = set(self._normal_sha256)
        self.record_training_images(s.image_path for s in images)
        if normal_feats is None:  # fit_defects: from the feature cache where there is one
            normal_feats = self.image_features(self._normal_samples, "normal features")
        self.map_scale_ = banks.map_scale(self, normal_feats)
        close_features(normal_feats)
        return self

    def defect_image_features(self, samples: list[Sample]) -> torch.Tensor:
        """(M, D) features of the patches that touch each image's defect mask, or, for an image
        without a mask, its pseudo-mask (patches above tau; recorded in ``pseudo_masks_``)."""
        rows, pseudo = defect_image_features(
            self.feature_source(), samples, self.memory_, getattr(self, "novelty_level_", None),
            self.num_neighbors,
        )  # fmt: skip
        self.pseudo_masks_ = pseudo
        return rows

    def crop_features(self, crops: list[DefectCrop]) -> torch.Tensor:
        """(M, D) features of defect patches, each crop run through the backbone at its own size."""
        return crop_features(self.feature_source(), crops, self.defect_patches)

    def set_novelty_level(self, level: float, record: dict[str, Any]) -> None:
        """Set tau (``novelty_level_``) and how it was measured (``novelty_level_record_``).

        A level of 0 (normal images whose patches all repeat each other exactly: blank or
        identical frames) is raised to ``MIN_NOVELTY_LEVEL``: then nothing is damped, every patch
        scores at least d_n, which is the safe side; the record says ``floored``."""
        record = dict(record)
        if not math.isfinite(level) or level < 0:
            raise DataError(f"novelty level {level!r} of the normal bank is not a distance")
        if level < MIN_NOVELTY_LEVEL:
            level, record["floored"] = MIN_NOVELTY_LEVEL, True
        self.novelty_level_, self.novelty_level_record_ = float(level), record

    def _score_features(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normal_dist, _ = self._nearest(self.memory_, feats)
        defect_dist, _ = self._nearest(self.defect_memory_, feats)
        size = tuple(self.image_size)
        level = getattr(self, "novelty_level_", None)
        return score_patches(
            normal_dist, size, self.blur_sigma, defect_dist, self.rule, self.eps,
            novelty_level=level,
        )  # fmt: skip

    def _banks(self) -> dict:
        return {"normal": self.memory_, "defect": self.defect_memory_}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {**super()._tensors(), "defect_bank": self.defect_memory_.bank_}

    def _set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super()._set_tensors(tensors)
        if "defect_bank" not in tensors:
            raise ModelFileError("dual model holds no defect_bank tensor")
        self.defect_memory_ = self._memory(self.defect_coreset)
        self.defect_memory_.bank_ = tensors["defect_bank"]
