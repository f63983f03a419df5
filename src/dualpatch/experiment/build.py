"""Settings -> fitted model, once: ``build_model`` is how ``dualpatch fit``, ``dualpatch run``
(``Experiment.fit_model``) and the few-shot runner (through it) turn a run's settings and a
training split into a fitted estimator, so one config gives one model whichever command fits it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dualpatch.data.base import Sample
from dualpatch.errors import ConfigError, DataError
from dualpatch.experiment.inputs import defect_inputs, synthetic_defects
from dualpatch.spec import RunSpec


def build_model(
    spec: RunSpec,
    train: Any,
    *,
    cache_dir: str | None = None,
    progress: Any = True,
    threshold_holdout: float = 0.0,
    held_out: Sequence[Sample] | None = None,
    pool: Path | None = None,
    on_ray: dict[str, Any] | None = None,
    on_defects: Callable[[Any, list], None] | None = None,
) -> Any:
    """The estimator of run ``spec`` fitted on ``train`` (a dataset's training split).

    The normal bank takes ``train``'s normal images but a seeded ``threshold_holdout`` share,
    on which the verdict threshold is then set (``threshold.calibrate``; 0: none stored). A dual
    model's defect bank takes the defect inputs the spec names (``defects``, ``crops``,
    ``augmented``) plus the first ``augment.n`` images of ``pool``, the synthetic defects made
    from ``train``; crops cut from the training images record those images' digests
    (provenance: ``training_overlap``). ``on_ray``: ``cluster.fit.fit_on_ray``'s arguments.
    ``held_out``: the held-out normal images for the threshold, given (a folder dataset's
    validation part) instead of drawn from ``train``. ``on_defects(model, defects)`` is told what
    fed a dual model's defect bank.
    """
    from dualpatch.models import DualPatchCore, PatchCore

    common = {"cache_dir": cache_dir, "progress": progress}
    if held_out is None:
        normal, held_out = _hold_out(list(train.normal()), threshold_holdout, spec.seed)
    else:
        normal, held_out = list(train.normal()), list(held_out)
    if spec.bank == "single":
        model = PatchCore(**spec.estimator_kwargs("single"), **common)
        _fit(model, on_ray, normal)
    else:
        augment = spec.defect_feature_augment
        model = DualPatchCore(**spec.estimator_kwargs(), **common, defect_feature_augment=augment)
        model.check_params()  # before the defect inputs are read: reweight is refused here
        defects = dual_defects(spec, train, pool)
        _fit(model, on_ray, normal, defects)
        if on_defects is not None:
            on_defects(model, defects)
        if spec.defects == "crop":  # crops carry no file: record their source images
            model.record_training_images(s.image_path for s in train.defective())
    if held_out:
        from dualpatch.threshold import calibrate

        calibrate(model, held_out)
    return model


def dual_defects(spec: RunSpec, train: Any, pool: Path | None = None) -> list:
    """What feeds the defect bank of dual run ``spec``; DataError naming the data if nothing
    does (a defect bank needs masked defects, crops or synthetic defects)."""
    augmented = [Path(p) for p in spec.augmented or ()]
    crops = [Path(p) for p in spec.crops or ()]
    defects = defect_inputs(train, spec.defects, spec.image_size, augmented, crops)
    if spec.augment:
        n = spec.augment.get("n", 40)
        synthetic = synthetic_defects([pool], spec.defects, spec.image_size, n) if pool else []
        if not synthetic:  # never report a run as augmented that added nothing
            raise ConfigError(f"{pool}: gave no synthetic defects for run {spec.name!r}")
        defects += synthetic
    if not defects:
        unmasked = [s.image_path for s in train.defective() if not s.mask_known]
        where = (
            f"{unmasked[0]}: defective training image has no mask"
            if unmasked
            else f"{train.root or 'training split'}: no defective training images with masks"
        )
        raise DataError(
            f"{where}; the defect bank needs masks: use --bank single or add --crops DIR or "
            "--augmented DIR"
        )
    return defects


def _hold_out(normal: list[Sample], fraction: float, seed: int) -> tuple[list, list]:
    """(bank images, held-out images) for the threshold; none held out for ``fraction`` 0."""
    from dualpatch.threshold import holdout_split

    if not fraction:
        return normal, []
    if len(normal) < 2:  # holding out the only image would leave no bank
        warnings.warn(
            f"{len(normal)} normal training image: none held out, no threshold stored",
            stacklevel=2,
        )
        return normal, []
    return holdout_split(normal, fraction, seed)


def _fit(model: Any, on_ray: dict[str, Any] | None, normal: Sequence[Sample], *defects: list):
    """``model.fit(normal[, defects])``, with the features extracted on Ray first if asked."""
    if on_ray is None:
        return model.fit(normal, *defects)
    from dualpatch.cluster.fit import fit_on_ray

    return fit_on_ray(model, normal, *defects, **on_ray)
