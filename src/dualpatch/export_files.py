"""Where exported scorers live and how they are tied to their model; no torch needed, so that the
onnx and openvino runtimes run without it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ModelFileError

FORMATS = ("onnx", "openvino")


def model_digest(model_dir: str | os.PathLike[str]) -> str:
    """The SHA-256 of the model's tensors, as recorded in its model.json."""
    meta_path = Path(model_dir) / "model.json"
    try:
        return str(json.loads(meta_path.read_text())["safetensors_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{meta_path}: no safetensors_sha256 recorded") from exc


def default_export_path(model_dir: str | os.PathLike[str], fmt: str) -> Path:
    """MODEL/model.onnx or MODEL/model.xml (with model.bin beside it)."""
    return Path(model_dir) / ("model.onnx" if fmt == "onnx" else "model.xml")
