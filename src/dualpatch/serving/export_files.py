"""Where exported scorers live and how they are tied to their model; no torch needed, so that the
onnx and openvino runtimes run without it.

Each export gets a record beside it, ``FILE.json`` (``model.onnx.json``, ``model.xml.json``):
the SHA-256 of every file of the export, the model tensors' SHA-256 and the settings the graph
was built from (``ModelCard.scoring_settings``: rule, k, eps, blur, threshold, resize filter,
image size, ...). ``check_export`` refuses an export whose files changed since, or whose model's
card no longer has those settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dualpatch.card import ModelCard
from dualpatch.errors import ModelFileError
from dualpatch.fileio import sha256_file, write_json

FORMATS = ("onnx", "openvino")
RECORD_VERSION = 1


def default_export_path(model_dir: str | os.PathLike[str], fmt: str) -> Path:
    """MODEL/model.onnx or MODEL/model.xml (with model.bin beside it)."""
    return Path(model_dir) / ("model.onnx" if fmt == "onnx" else "model.xml")


def export_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files an export consists of: the .onnx, or the .xml and its .bin."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def record_path(path: str | os.PathLike[str]) -> Path:
    """The export's record: ``FILE.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def graph_metadata(card: ModelCard) -> dict[str, str]:
    """What the exported graph itself carries (ONNX metadata_props, OpenVINO rt_info)."""
    settings = card.scoring_settings()
    return {
        "dualpatch_model_digest": card.safetensors_sha256,
        "dualpatch_kind": card.kind,
        "dualpatch_rule": settings["rule"] or "",
        "dualpatch_image_size": json.dumps(list(card.image_size)),
        "dualpatch_resize": settings["resize"],
        "dualpatch_threshold": json.dumps(settings["threshold"]),
        # tau of the guarded rule, for users of the bare file (null without one)
        "dualpatch_novelty_level": json.dumps(settings["novelty_level"]),
        "dualpatch_settings": json.dumps(settings, sort_keys=True),
    }


def write_export_record(card: ModelCard, path: str | os.PathLike[str]) -> Path:
    """Write ``path``'s record (see the module docstring) once its files are in place."""
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "files": {p.name: sha256_file(p) for p in export_files(path)},
        "model_sha256": card.safetensors_sha256,
        "settings": card.scoring_settings(),
    }
    target = record_path(path)
    write_json(target, record)
    return target


def check_export(card: ModelCard, path: str | os.PathLike[str]) -> None:
    """ModelFileError unless ``path``'s files are those its record names (by SHA-256), and were
    exported from ``card``'s tensors with ``card``'s current settings."""
    path, where = Path(path), record_path(path)
    record = _read_record(where)
    for file in export_files(path):
        want = record["files"].get(file.name)
        if not file.is_file():
            raise ModelFileError(f"{file}: exported model file not found")
        if want != sha256_file(file):
            raise ModelFileError(
                f"{file}: checksum differs from its export record {where.name} (damaged or "
                "replaced); re-run dualpatch export"
            )
    if record["model_sha256"] != card.safetensors_sha256:
        raise ModelFileError(
            f"{path}: exported from other model tensors than {card.tensor_path} "
            "(re-run dualpatch export)"
        )
    changed = _changed(record["settings"], card.scoring_settings())
    if changed:
        raise ModelFileError(
            f"{path}: exported with other settings than {card.path} now holds ({changed}); "
            "re-run dualpatch export"
        )


def _read_record(where: Path) -> dict[str, Any]:
    try:
        record = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(
            f"{where}: export record not found (exported by an older dualpatch, or moved without "
            "it); re-run dualpatch export"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{where}: unreadable export record ({exc})") from None
    ok = (
        isinstance(record, dict)
        and record.get("record_version") == RECORD_VERSION
        and isinstance(record.get("files"), dict)
        and isinstance(record.get("settings"), dict)
    )
    if not ok:
        raise ModelFileError(f"{where}: not an export record of this dualpatch version")
    return record


def _changed(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """The settings that differ, as ``key: recorded -> current``."""
    current = json.loads(json.dumps(current))  # as it reads back from a record
    keys = sorted(set(recorded) | set(current))
    return ", ".join(
        f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}"
        for k in keys
        if recorded.get(k) != current.get(k)
    )
