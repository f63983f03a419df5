"""The model card: ``model.json`` read and checked in one place (``ModelCard.read``).

Every field is checked at load, whoever loads (``predict``, ``evaluate``, ``serve``, the ONNX and
OpenVINO runtimes): a field of the wrong type, a NaN or infinity anywhere, a negative ``eps``,
an ``image_size`` outside the limits, a threshold that is not a number -> one ``ModelFileError``
line naming the file.

Values that pass those checks can still be edited by hand (``k`` 1 -> 3, the rule, the threshold).
So ``save`` seals the card: the SHA-256 of every field that can change a score
(``seal_of``) is stored in ``model.safetensors``'s header, whose own SHA-256 is in the card.
Changing a sealed field is refused at load. Left out of the seal: the tensors' digest (checked
against the tensor file itself), the package versions, where the backbone weights file lives
(its SHA-256 stays sealed), ``UNSEALED_PARAMS``, which change memory use, never a score, and the
provenance records (which images and crops a fit read, how its threshold was chosen), so that
one bank fitted by two routes is one tensor file, byte for byte.
Models saved before the seal existed are re-validated field by field only.

No torch here: the exported-graph runtimes read cards without it.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dualpatch.errors import ConfigError, ModelFileError

CARD = "model.json"
TENSORS = "model.safetensors"
FORMAT_VERSION = 1
#: safetensors header metadata key that holds the card's seal
SEAL_KEY = "dualpatch_card_sha256"
#: parameters that change memory use or speed, never a score (a user may edit them)
UNSEALED_PARAMS = ("batch_size", "max_memory")
#: top-level keys outside the seal (see the module docstring): digests, versions, provenance
UNSEALED_KEYS = (
    "safetensors_sha256",
    "versions",
    "train_sha256",
    "defect_crop_files",
    "threshold_rule",
)
REQUIRED = ("params", "grid", "feature_dim", "tensors")
#: a safetensors header larger than this is not one dualpatch wrote
MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class ModelCard:
    """What ``model.json`` says, checked: ``data`` is the whole card as read (keys that later
    versions add included), the other fields its typed parts. Read-only views: a card is what
    the file holds, not a place to change settings."""

    path: Path
    model_class: str
    params: Mapping[str, Any]
    grid: tuple[int, int]
    feature_dim: int
    tensors: Mapping[str, tuple[int, ...]]
    safetensors_sha256: str
    threshold: float | None
    threshold_rule: str | None
    map_scale: float | None
    train_sha256: frozenset[str]
    data: Mapping[str, Any]

    @classmethod
    def read(cls, model_dir: str | os.PathLike[str], seal: bool = True) -> ModelCard:
        """The card of the model in ``model_dir``, every field checked and (``seal``) the seal
        verified; a loader that checks the values against the estimator first (for a more
        precise message) calls ``check_seal`` itself afterwards."""
        path = resolve_model_dir(model_dir) / CARD
        card = cls._from_data(path, _load_json(path))
        if seal:
            card.check_seal()
        return card

    @classmethod
    def _from_data(cls, path: Path, data: dict[str, Any]) -> ModelCard:
        check = _Checker(path)
        check.finite(data, "")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ModelFileError(f"{path}: missing key(s) {', '.join(missing)}")
        params = current_params(check.mapping(data["params"], "params"))
        check_params(path, params)
        return cls(
            path=path,
            model_class=check.text(data.get("class"), "class"),
            params=MappingProxyType(params),
            grid=check.whole_list(data["grid"], "grid", length=2),
            feature_dim=check.whole(data["feature_dim"], "feature_dim", 1),
            tensors=check.shapes(data["tensors"]),
            safetensors_sha256=check.hex_digest(data.get("safetensors_sha256")),
            threshold=check.number(data.get("threshold"), "threshold", optional=True),
            threshold_rule=check.optional_text(data.get("threshold_rule"), "threshold_rule"),
            map_scale=check.number(
                data.get("map_scale"), "map_scale", positive=True, optional=True
            ),
            train_sha256=frozenset(check.texts(data.get("train_sha256") or [], "train_sha256")),
            data=cls._check_extras(check, data),
        )

    @staticmethod
    def _check_extras(check: _Checker, data: dict[str, Any]) -> Mapping[str, Any]:
        """The optional fields that only the estimator reads: their types, here too."""
        check.number(data.get("novelty_level"), "novelty_level", positive=True, optional=True)
        gate = data.get("image_gate")
        if gate is not None:
            check.mapping(gate, "image_gate")
            for key in ("level", "scale"):
                check.number(gate.get(key), f"image_gate.{key}", positive=True)
            record = check.mapping(gate.get("record"), "image_gate.record")
            check.whole(record.get("summary_patches"), "image_gate.record.summary_patches", 1)
        weights = data.get("backbone_weights")
        if weights is not None:
            check.mapping(weights, "backbone_weights")
            for key in ("file", "sha256"):
                check.optional_text(weights.get(key), f"backbone_weights.{key}")
        return MappingProxyType(data)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def tensor_path(self) -> Path:
        return self.folder / TENSORS

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.params["image_size"]
        return int(size[0]), int(size[1])

    @property
    def kind(self) -> str:
        """ "dual" when the card holds a defect bank, else "single"."""
        return "dual" if self.model_class == "DualPatchCore" else "single"

    def scoring_settings(self) -> dict[str, Any]:
        """The settings an exported graph bakes in: it must be rebuilt when one changes."""
        from dualpatch.data.images import FEATURE_RESIZE

        p = self.params
        return {
            "kind": self.kind,
            "rule": p.get("rule") if self.kind == "dual" else None,
            "num_neighbors": p.get("num_neighbors", 1),
            "eps": p.get("eps") if self.kind == "dual" else None,
            "blur_sigma": p.get("blur_sigma"),
            "normalization": p.get("normalization"),
            "backbone": p.get("backbone"),
            "image_size": list(self.image_size),
            "feature_dim": self.feature_dim,
            "threshold": self.threshold,
            "novelty_level": self.data.get("novelty_level"),
            "image_gate": self.data.get("image_gate"),
            "resize": FEATURE_RESIZE,
        }

    def check_seal(self) -> None:
        """ModelFileError if a sealed field differs from what ``model.safetensors`` was saved
        with. A tensor file without a seal (saved before it existed) is accepted."""
        stored = read_safetensors_metadata(self.tensor_path).get(SEAL_KEY)
        if stored is not None and stored != seal_of(self.data):
            raise ModelFileError(
                f"{self.path}: settings differ from those {TENSORS} was saved with (edited by "
                "hand?); restore the file or refit"
            )


#: a versioned model folder's pointer to its current version (``models.versions``)
CURRENT = "current"


def resolve_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    """The folder that holds the current ``model.json`` and ``model.safetensors``: the current
    version's folder when ``model_dir`` is versioned (``models.versions``), else ``model_dir``."""
    model_dir = Path(model_dir)
    pointer = model_dir / CURRENT
    if not pointer.is_symlink():
        return model_dir
    target = (model_dir / os.readlink(pointer)).resolve()
    if not target.is_dir():
        raise ModelFileError(f"{pointer}: points to {os.readlink(pointer)}, which is missing")
    return target


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)})") from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: unreadable ({exc.strerror or exc})") from exc
    version = data.get("format_version") if isinstance(data, dict) else "?"
    if version != FORMAT_VERSION:
        from dualpatch import __version__

        raise ModelFileError(
            f"{path}: model format {version} is not supported by dualpatch {__version__} "
            f"(expects {FORMAT_VERSION})"
        )
    return data


def check_finite(data: Any, path: Path) -> None:
    """ModelFileError naming ``path`` and the key if ``data`` holds a NaN or infinity."""
    _Checker(path).finite(data, "")


def current_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Saved parameters in today's names. Before ``reweight_neighbors`` existed, ``num_neighbors``
    was the re-weighting's neighbourhood and every bank distance was the nearest one (k = 1)."""
    params = dict(params)
    if "reweight_neighbors" not in params and "num_neighbors" in params:
        params["reweight_neighbors"] = params.pop("num_neighbors")
        params["num_neighbors"] = 1
    return params


#: whole-number parameters and their least value
_WHOLE = {
    "batch_size": 1,
    "coreset_min": 1,
    "projection_dim": 1,
    "num_neighbors": 1,
    "reweight_neighbors": 1,
    "seed": 0,
}
#: fractions in (0, 1]
_FRACTIONS = ("coreset_ratio", "defect_coreset")
_TEXTS = (
    "backbone", "normalization", "rule", "coreset_method", "knn", "defect_patches", "bank_dtype"
)  # fmt: skip
#: whole-number parameters that may also be null (no cap, no projection), and their least value
_WHOLE_OR_NULL = {"coreset_rows": 1, "search_dim": 1}


def check_params(path: Path, params: Mapping[str, Any]) -> None:
    """ModelFileError unless each saved parameter has a usable type and range (names of rules,
    backbones and the like are checked by the estimator that the card is loaded into)."""
    from dualpatch.limits import check_size

    check = _Checker(path)
    size = params.get("image_size")
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(map(_is_int, size))):
        raise ModelFileError(f"{path}: image_size is {size!r}; expected [H, W]")
    try:
        check_size(size[0], size[1], f"image_size {list(size)}")
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    for key, low in _WHOLE.items():
        if key in params:
            check.whole(params[key], key, low)
    for key, low in _WHOLE_OR_NULL.items():
        if params.get(key) is not None:
            check.whole(params[key], key, low)
    for key in _FRACTIONS:
        if key in params and not 0 < check.number(params[key], key) <= 1:
            raise ModelFileError(f"{path}: {key} is {params[key]!r}; expected a fraction in (0, 1]")
    for key in _TEXTS:
        if key in params:
            check.text(params[key], key)
    for key in ("reweight", "image_gate"):
        if key in params and not isinstance(params[key], bool):
            raise ModelFileError(f"{path}: {key} is {params[key]!r}; expected true or false")
    if "blur_sigma" in params:
        check.number(params["blur_sigma"], "blur_sigma", nonnegative=True)
    if "eps" in params:
        check.number(params["eps"], "eps", positive=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Checker:
    """Field checks whose errors name the card file."""

    path: Path

    def fail(self, key: str, value: Any, expected: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {key} is {value!r}; expected {expected}")

    def finite(self, value: Any, key: str) -> None:
        """No NaN or infinity anywhere (Python's json reads them although JSON has none)."""
        real = isinstance(value, numbers.Real) and not isinstance(value, int)  # numpy's too
        if real and not math.isfinite(value):
            raise self.fail(key or "a value", value, "a finite number")
        if isinstance(value, dict | list | tuple):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                self.finite(v, f"{key}.{k}" if key else str(k))

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise ModelFileError(f"{self.path}: '{key}' is not a mapping")
        return value

    def whole(self, value: Any, key: str, low: int) -> int:
        if not _is_int(value) or value < low:
            raise self.fail(key, value, f"a whole number >= {low}")
        return value

    def whole_list(self, value: Any, key: str, length: int) -> tuple[int, ...]:
        if not (isinstance(value, list) and len(value) == length):
            raise self.fail(key, value, f"{length} whole numbers")
        return tuple(self.whole(v, key, 1) for v in value)

    def number(
        self,
        value: Any,
        key: str,
        positive: bool = False,
        nonnegative: bool = False,
        optional: bool = False,
    ) -> float | None:
        if value is None and optional:
            return None
        low = " > 0" if positive else " >= 0" if nonnegative else ""
        if not _is_number(value):
            raise self.fail(key, value, f"a number{low}")
        if (positive and value <= 0) or (nonnegative and value < 0):
            raise self.fail(key, value, f"a number{low}")
        return float(value)

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, value, "a name")
        return value

    def optional_text(self, value: Any, key: str) -> str | None:
        return None if value is None else self.text(value, key)

    def texts(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "...", "a list of strings")
        return value

    def shapes(self, value: Any) -> dict[str, tuple[int, ...]]:
        if not isinstance(value, dict) or not value:
            raise self.fail("tensors", value, "a mapping of tensor names to shapes")
        return {k: self.whole_list(v, f"tensors.{k}", 2) for k, v in value.items()}

    def hex_digest(self, value: Any) -> str:
        if not (isinstance(value, str) and len(value) == 64):
            raise self.fail("safetensors_sha256", value, "a SHA-256 in hex")
        try:
            int(value, 16)
        except ValueError:
            raise self.fail("safetensors_sha256", value, "a SHA-256 in hex") from None
        return value


def seal_of(card: Mapping[str, Any]) -> str:
    """SHA-256 of the card's sealed fields (everything but ``UNSEALED_KEYS``, the weights
    file's location and ``UNSEALED_PARAMS``), parameters in today's names."""
    data = json.loads(json.dumps(dict(card), default=str))  # as it reads back from the file
    for key in UNSEALED_KEYS:
        data.pop(key, None)
    if isinstance(data.get("params"), dict):
        data["params"] = current_params(data["params"])
        for key in UNSEALED_PARAMS:
            data["params"].pop(key, None)
    if isinstance(data.get("backbone_weights"), dict):
        data["backbone_weights"].pop("file", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its header (8-byte little-endian
    length, then JSON) without loading any tensor."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_HEADER:
                raise ValueError(f"header of {size} bytes")
            header = json.loads(f.read(size).decode("utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except (OSError, ValueError, struct.error) as exc:
        raise ModelFileError(f"{path}: unreadable safetensors header ({exc})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}
