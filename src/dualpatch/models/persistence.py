"""Saving and loading fitted models: ``model.safetensors`` (the banks) + ``model.json`` (class,
parameters, format version, shapes, digests, versions). No pickle; anything tampered with,
truncated or mismatched is refused with a ``ModelFileError``/``WeightsError``: the tensors by their
SHA-256 in model.json, model.json's score-changing fields by the seal in the tensor file's header
and by a check of every field (``dualpatch.card``), and non-finite banks at save and at load.

``load`` dispatches on model.json's ``class`` through the registry ``model_classes()``, which each
estimator class joins with ``@register`` where it is defined: this module imports no estimator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dualpatch.card import (
    CARD,
    FORMAT_VERSION,
    SEAL_KEY,
    TENSORS,
    ModelCard,
    check_finite,
    resolve_model_dir,
    seal_of,
)
from dualpatch.environment import versions
from dualpatch.errors import ConfigError, ModelFileError, WeightsError
from dualpatch.fileio import atomic_path, finite, sha256_file, write_json

__all__ = [
    "FORMAT_VERSION",
    "load_model",
    "model_class",
    "model_classes",
    "register",
    "save_model",
    "weights_record",
]

#: the estimator classes a model.json may name, by class name (filled by ``register``)
_CLASSES: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: ``cls`` may be named by a model.json's ``class`` and loaded."""
    _CLASSES[cls.__name__] = cls
    return cls


def model_classes() -> dict[str, type]:
    """The estimator classes a model.json may name."""
    return dict(_CLASSES)


def model_class(name: str) -> type:
    """The registered estimator class called ``name`` (``ConfigError`` if there is none)."""
    if name not in _CLASSES:
        raise ConfigError(f"unknown model class {name!r} (known: {', '.join(sorted(_CLASSES))})")
    return _CLASSES[name]


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (config, versions, shapes, digest), the
    card sealed in the tensor file's header (``dualpatch.card``). Non-finite banks are refused."""
    from safetensors.torch import save_file

    model._check_fitted()
    path = Path(path)
    tensors = {k: v.contiguous() for k, v in model._tensors().items()}
    _check_finite(tensors, f"{type(model).__name__}.save")
    meta = _card(model, tensors, path / CARD)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={SEAL_KEY: seal_of(meta)})
        meta["safetensors_sha256"] = sha256_file(tmp)
        # The JSON is written while the tensor file is still temporary, so a crash between the
        # two renames leaves an old pair or a JSON whose digest exposes the mismatch.
        write_json(path / CARD, meta)
    return path


def _card(model: Any, tensors: dict[str, Any], where: Path) -> dict[str, Any]:
    """model.json's fields but the tensor file's digest (``where`` names the file in errors)."""
    meta = {
        "format_version": FORMAT_VERSION,
        "class": type(model).__name__,
        "params": model.get_params(),
        "grid": list(model.grid_),
        "feature_dim": int(next(iter(tensors.values())).shape[1]),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
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
    if getattr(model, "pseudo_masks_", None):  # unmasked defects in the defect bank
        meta["pseudo_masks"] = model.pseudo_masks_
    if getattr(model, "gate_level_", None) is not None:  # the image-level check, calibrated
        meta["image_gate"] = {"level": model.gate_level_, "scale": model.gate_scale_,
                              "record": model.gate_record_}  # fmt: skip
    check_finite(meta, where)  # JSON has no NaN: refused now, not at load
    return json.loads(json.dumps(finite(meta), default=str))  # as it reads back: plain numbers


def _check_finite(tensors: dict[str, Any], where: str | Path) -> None:
    """ModelFileError naming ``where`` if a bank holds NaN or infinity: one such row makes every
    score NaN."""
    import torch

    for name, bank in tensors.items():
        bad = int((~torch.isfinite(bank)).sum())
        if bad:
            raise ModelFileError(f"{where}: {name} holds {bad} NaN or infinite value(s)")


def weights_record(backbone: str, weights: str | None) -> dict[str, str | None]:
    """Which backbone weights a model was fit with: the file and its SHA-256."""
    from dualpatch.features.backbones import default_weights_file

    if weights:
        return {"file": str(Path(weights).resolve()), "sha256": sha256_file(weights)}
    package = default_weights_file(backbone)
    return {"file": None, "sha256": sha256_file(package) if package else None}


def load_model(cls: type, path: str | os.PathLike[str], weights: str | None = None) -> Any:
    """Load a model saved by ``save_model`` as ``cls`` or a subclass; refuses tampered,
    truncated or mismatched files and edited settings (``ModelCard.read``). A versioned folder
    gives its current version (resolved once, so the JSON and the tensors are read from the same
    version: ``models.versions``)."""
    path = resolve_model_dir(path)
    for p in (path / CARD, path / TENSORS):
        if not p.is_file():
            raise ModelFileError(f"{p}: model file not found")
    card = ModelCard.read(path, seal=False)  # sealed last: the checks below say more
    target = _saved_class(cls, card)
    tensors = _read_tensors(card)
    weights = _matching_weights(card, weights)
    try:
        model = target(**card.params, weights=weights)
        model.check_params()
    except ConfigError as exc:
        raise ModelFileError(f"{card.path}: {exc}") from exc
    except TypeError as exc:
        raise ModelFileError(
            f"{card.path}: parameters do not fit {card.model_class} ({exc})"
        ) from exc
    model.image_size = card.image_size
    try:
        model._set_tensors(tensors)
    except ModelFileError as exc:
        raise ModelFileError(f"{card.tensor_path}: {exc}") from exc
    _set_learned_state(model, card)
    try:
        dim = model.extractor_.dim  # builds the backbone: unknown names surface here
    except ConfigError as exc:
        raise ModelFileError(f"{card.path}: {exc}") from exc
    _check_width(card, tensors, dim, model.backbone)
    card.check_seal()
    return model


def _check_width(card: ModelCard, tensors: dict[str, Any], expected: int, backbone: str) -> None:
    """ModelFileError unless the card's feature size and every bank's width are the backbone's."""
    if card.feature_dim != expected:
        raise ModelFileError(
            f"{card.path}: feature size {card.feature_dim} does not match backbone "
            f"{backbone} ({expected})"
        )
    wrong = {k: int(v.shape[1]) for k, v in tensors.items() if v.shape[1] != expected}
    if wrong:
        raise ModelFileError(
            f"{card.tensor_path}: bank width {wrong} differs from the backbone's feature size "
            f"({expected})"
        )


def _saved_class(cls: type, card: ModelCard) -> type:
    """The estimator class model.json names: a registered one, and ``cls`` or a subclass."""
    classes = model_classes()
    if card.model_class not in classes:
        raise ModelFileError(f"{card.path}: unknown model class {card.model_class!r}")
    target = classes[card.model_class]
    if not issubclass(target, cls):
        raise ModelFileError(f"{card.path}: holds a {card.model_class}, not a {cls.__name__}")
    return target


def _read_tensors(card: ModelCard) -> dict[str, Any]:
    """The banks of model.safetensors, once its digest, the tensors' names and shapes and their
    values (finite, ``feature_dim`` wide) agree with the card."""
    from safetensors.torch import load_file

    tensor_path = card.tensor_path
    if sha256_file(tensor_path) != card.safetensors_sha256:
        raise ModelFileError(
            f"{tensor_path}: checksum does not match model.json (file tampered with or truncated)"
        )
    try:
        tensors = load_file(str(tensor_path))
    except Exception as exc:
        raise ModelFileError(f"{tensor_path}: unreadable safetensors ({exc})") from exc
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if shapes != dict(card.tensors):
        raise ModelFileError(
            f"{tensor_path}: tensor shapes {_listed(shapes)} differ from model.json"
        )
    _check_finite(tensors, tensor_path)
    return tensors


def _listed(shapes: dict[str, tuple[int, ...]]) -> dict[str, list[int]]:
    return {k: list(v) for k, v in shapes.items()}


def _set_learned_state(model: Any, card: ModelCard) -> None:
    """The fitted attributes model.json holds besides the banks."""
    model.grid_ = card.grid
    model.threshold_ = model.threshold_record_ = None
    if card.threshold is not None:
        model.threshold_ = card.threshold
        model.threshold_rule_ = card.threshold_rule
        model.threshold_record_ = card.data.get("threshold_record")
    _set_novelty_level(model, card)
    model.train_sha256_ = set(card.train_sha256)
    model.map_scale_ = card.map_scale
    if "defect_crop_files" in card.data:
        model.defect_crop_files_ = card.data["defect_crop_files"]
    if "pseudo_masks" in card.data:
        model.pseudo_masks_ = card.data["pseudo_masks"]
    _set_gate(model, card)


def _set_gate(model: Any, card: ModelCard) -> None:
    """The image-level check's level, scale and summaries (M, R, D) from the card and the tensor
    file, which must both have it or both lack it (a model saved before it existed has none)."""
    gate, rows = card.data.get("image_gate"), getattr(model, "gate_summaries_", None)
    if (gate is None) != (rows is None):
        raise ModelFileError(
            f"{card.path}: the image-level check is in one of model.json and "
            f"{card.tensor_path.name} but not the other"
        )
    if gate is None:
        return
    per_image = gate["record"]["summary_patches"]
    if rows.shape[0] % per_image:
        raise ModelFileError(
            f"{card.tensor_path}: gate_summaries has {rows.shape[0]} rows, not a multiple of "
            f"{per_image} patches per image"
        )
    model.gate_summaries_ = rows.reshape(-1, per_image, rows.shape[1])
    model.gate_level_, model.gate_scale_ = float(gate["level"]), float(gate["scale"])
    model.gate_record_ = dict(gate["record"])


def _set_novelty_level(model: Any, card: ModelCard) -> None:
    """tau from model.json (checked > 0 by the card); a rule that needs it (``guarded``) refuses
    a file without it."""
    level = card.data.get("novelty_level")
    if level is None:
        if getattr(model, "rule", None) == "guarded":
            raise ModelFileError(
                f"{card.path}: rule 'guarded' needs the novelty_level the fit measured; "
                "the file has none (refit the model)"
            )
        return
    model.novelty_level_ = float(level)
    model.novelty_level_record_ = card.data.get("novelty_level_record")


def _matching_weights(card: ModelCard, weights: str | None) -> str | None:
    """The backbone weights to load the model with: ``weights`` if given, else the file the model
    was fit with; WeightsError if they are not the weights (by SHA-256) the model was fit with.

    A recorded path is only ever hashed if it is a regular file, and only used if its SHA-256 is
    the recorded one, so a model file cannot make dualpatch read anything but those weights."""
    from dualpatch.features.backbones import default_weights_file

    meta_path, record = card.path, card.data.get("backbone_weights")
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
        package = default_weights_file(card.params.get("backbone", ""))
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
