"""Saving and loading fitted models: ``model.safetensors`` (the banks) + ``model.json`` (class,
parameters, format version, shapes, digests, versions). No pickle; anything tampered with,
truncated or mismatched is refused with a ``ModelFileError``/``WeightsError``.

``load`` dispatches on model.json's ``class`` through ``model_classes()``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..environment import versions
from ..errors import ConfigError, ModelFileError, WeightsError
from ..fileio import atomic_path, sha256_file, write_json

FORMAT_VERSION = 1


def model_classes() -> dict[str, type]:
    """The estimator classes a model.json may name."""
    from .dual import DualPatchCore
    from .patchcore import PatchCore

    return {"PatchCore": PatchCore, "DualPatchCore": DualPatchCore}


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (config, versions, shapes, digest)."""
    from safetensors.torch import save_file

    model._check_fitted()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in model._tensors().items()}
    with atomic_path(path / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
        digest = sha256_file(tmp)
        meta = {
            "format_version": FORMAT_VERSION,
            "class": type(model).__name__,
            "params": model.get_params(),
            "grid": list(model.grid_),
            "feature_dim": int(next(iter(tensors.values())).shape[1]),
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
            "safetensors_sha256": digest,
            "versions": versions(),
            "backbone_weights": weights_record(model.backbone, model.weights),
            "train_sha256": sorted(getattr(model, "train_sha256_", ())),
            "map_scale": getattr(model, "map_scale_", None),
        }
        if getattr(model, "threshold_", None) is not None:  # optional: older models lack it
            meta["threshold"] = model.threshold_
            meta["threshold_rule"] = getattr(model, "threshold_rule_", None)
            meta["threshold_record"] = getattr(model, "threshold_record_", None)
        if getattr(model, "novelty_level_", None) is not None:  # dual models (scoring.DUAL_RULES)
            meta["novelty_level"] = model.novelty_level_
            meta["novelty_level_record"] = getattr(model, "novelty_level_record_", None)
        if getattr(model, "defect_crop_files_", None):
            meta["defect_crop_files"] = model.defect_crop_files_
        # The JSON is written while the tensor file is still temporary, so a crash between the
        # two renames leaves an old pair or a JSON whose digest exposes the mismatch.
        write_json(path / "model.json", meta)
    return path


def weights_record(backbone: str, weights: str | None) -> dict[str, str | None]:
    """Which backbone weights a model was fit with: the file and its SHA-256."""
    from ..backbones import default_weights_file

    if weights:
        return {"file": str(Path(weights).resolve()), "sha256": sha256_file(weights)}
    package = default_weights_file(backbone)
    return {"file": None, "sha256": sha256_file(package) if package else None}


def _read_meta(meta_path: Path) -> dict:
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
    return meta


def load_model(cls: type, path: str | os.PathLike[str], weights: str | None = None) -> Any:
    """Load a model saved by ``save_model`` as ``cls`` or a subclass; refuses tampered,
    truncated or mismatched files."""
    path = Path(path)
    meta_path, tensor_path = path / "model.json", path / "model.safetensors"
    for p in (meta_path, tensor_path):
        if not p.is_file():
            raise ModelFileError(f"{p}: model file not found")
    meta = _read_meta(meta_path)
    target = _saved_class(cls, meta, meta_path)
    tensors = _read_tensors(tensor_path, meta, meta_path)
    check_saved_params(meta_path, meta["params"])
    weights = _matching_weights(meta_path, meta, weights)
    try:
        model = target(**current_params(meta["params"]), weights=weights)
        model.check_params()
    except ConfigError as exc:
        raise ModelFileError(f"{meta_path}: {exc}") from exc
    except TypeError as exc:
        raise ModelFileError(f"{meta_path}: parameters do not fit {meta['class']} ({exc})") from exc
    model.image_size = tuple(model.image_size)
    try:
        model._set_tensors(tensors)
    except ModelFileError as exc:
        raise ModelFileError(f"{tensor_path}: {exc}") from exc
    try:
        _set_learned_state(model, meta)
    except ModelFileError as exc:
        raise ModelFileError(f"{meta_path}: {exc}") from exc
    expected = model.extractor_.dim
    if meta["feature_dim"] != expected:
        raise ModelFileError(
            f"{meta_path}: feature size {meta['feature_dim']} does not match backbone "
            f"{model.backbone} ({expected})"
        )
    return model


def _saved_class(cls: type, meta: dict, meta_path: Path) -> type:
    """The estimator class model.json names: a registered one, and ``cls`` or a subclass."""
    classes = model_classes()
    if meta.get("class") not in classes:
        raise ModelFileError(f"{meta_path}: unknown model class {meta.get('class')!r}")
    target = classes[meta["class"]]
    if not issubclass(target, cls):
        raise ModelFileError(f"{meta_path}: holds a {meta['class']}, not a {cls.__name__}")
    return target


def _read_tensors(tensor_path: Path, meta: dict, meta_path: Path) -> dict[str, Any]:
    """The banks of model.safetensors, once its digest, model.json's keys and the tensors'
    shapes agree with model.json."""
    from safetensors.torch import load_file

    if sha256_file(tensor_path) != meta.get("safetensors_sha256"):
        raise ModelFileError(
            f"{tensor_path}: checksum does not match model.json (file tampered with or truncated)"
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
    return tensors


def _set_learned_state(model: Any, meta: dict) -> None:
    """The fitted attributes model.json holds besides the banks."""
    model.grid_ = tuple(meta["grid"])
    model.threshold_ = model.threshold_record_ = None
    if meta.get("threshold") is not None:
        model.threshold_ = float(meta["threshold"])
        model.threshold_rule_ = meta.get("threshold_rule")
        model.threshold_record_ = meta.get("threshold_record")
    _set_novelty_level(model, meta)
    model.train_sha256_ = set(meta.get("train_sha256") or ())
    scale = meta.get("map_scale")
    model.map_scale_ = float(scale) if isinstance(scale, int | float) and scale > 0 else None
    if "defect_crop_files" in meta:
        model.defect_crop_files_ = meta["defect_crop_files"]


def _set_novelty_level(model: Any, meta: dict) -> None:
    """tau from model.json; a rule that needs it (``guarded``) refuses a file without it."""
    level = meta.get("novelty_level")
    if level is None:
        if getattr(model, "rule", None) == "guarded":
            raise ModelFileError(
                "rule 'guarded' needs the novelty_level the fit measured; "
                "the file has none (refit the model)"
            )
        return
    if isinstance(level, bool) or not isinstance(level, int | float) or not level > 0:
        raise ModelFileError(f"novelty_level is {level!r}; expected a number > 0")
    model.novelty_level_ = float(level)
    model.novelty_level_record_ = meta.get("novelty_level_record")


def current_params(params: dict[str, Any]) -> dict[str, Any]:
    """Saved parameters in today's names. Before ``reweight_neighbors`` existed, ``num_neighbors``
    was the re-weighting's neighbourhood and every bank distance was the nearest one (k = 1)."""
    params = dict(params)
    if "reweight_neighbors" not in params and "num_neighbors" in params:
        params["reweight_neighbors"] = params.pop("num_neighbors")
        params["num_neighbors"] = 1
    return params


def check_saved_params(meta_path: Path, params: Any) -> None:
    """ModelFileError unless the hand-editable parameters of model.json are usable."""
    from ..limits import check_size

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
    was fit with; WeightsError if they are not the weights (by SHA-256) the model was fit with.

    A recorded path is only ever hashed if it is a regular file, and only used if its SHA-256 is
    the recorded one, so a model file cannot make dualpatch read anything but those weights."""
    from ..backbones import default_weights_file

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
