"""Exports are checked: each carries a record (``FILE.json``) of its files' SHA-256 and the
settings it was built from; the ONNX/OpenVINO runtimes refuse a damaged export, a missing record
and a model whose card no longer has those settings."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dualpatch.errors import ModelFileError
from tests.support.model_files import as_saved_before_the_seal, edit_card

pytest.importorskip("onnxruntime")


@pytest.fixture
def exported(fitted_dual, tmp_path) -> Path:
    from dualpatch.serving.export import export_model

    model = copy.copy(fitted_dual)
    model.threshold_, model.threshold_rule_ = 0.75, "test"
    folder = model.save(tmp_path / "m")
    export_model(folder, "onnx", folder / "model.onnx")
    return folder


def test_export_records_its_digest_and_settings(exported):
    import onnx

    from dualpatch.card import ModelCard
    from dualpatch.fileio import sha256_file

    record = json.loads((exported / "model.onnx.json").read_text())
    card = ModelCard.read(exported)
    assert record["files"] == {"model.onnx": sha256_file(exported / "model.onnx")}
    assert record["model_sha256"] == card.safetensors_sha256
    settings = record["settings"]
    assert settings["rule"] == card.params["rule"] and settings["num_neighbors"] == 1
    assert settings["threshold"] == 0.75 and settings["resize"] == "bilinear"
    assert settings["image_size"] == [64, 32] and settings["eps"] == card.params["eps"]
    props = {p.key: p.value for p in onnx.load(str(exported / "model.onnx")).metadata_props}
    assert (
        props["dualpatch_resize"] == "bilinear" and json.loads(props["dualpatch_threshold"]) == 0.75
    )
    assert json.loads(props["dualpatch_settings"]) == settings


def test_damaged_onnx_is_refused(exported):
    from dualpatch.serving.runtime import open_scorer

    path = exported / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight: still a loadable graph
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum differs from its export record") as err:
        open_scorer(exported, "onnx")
    assert str(err.value).startswith(f"{path}: ")


def test_export_without_its_record_is_refused(exported):
    from dualpatch.serving.runtime import open_scorer

    (exported / "model.onnx.json").unlink()
    with pytest.raises(ModelFileError, match="export record not found"):
        open_scorer(exported, "onnx")


def test_sealed_card_edited_after_export_is_refused(exported):
    from dualpatch.serving.runtime import open_scorer

    edit_card(exported, lambda m: m["params"].update(num_neighbors=3))
    with pytest.raises(ModelFileError, match="settings differ"):
        open_scorer(exported, "onnx")


@pytest.mark.parametrize(
    ("key", "value"), [("num_neighbors", 3), ("rule", "weighted"), ("threshold", 0.5)]
)
def test_unsealed_card_edited_after_export_is_refused(fitted_dual, tmp_path, key, value):
    """A model saved before the seal: only the export's record can tell that k, the rule or the
    threshold changed after the graph was built."""
    from dualpatch.serving.export import export_model
    from dualpatch.serving.runtime import open_scorer

    model = copy.copy(fitted_dual)
    model.rule = "patch"
    folder = model.save(tmp_path / "m")
    as_saved_before_the_seal(folder)
    export_model(folder, "onnx", folder / "model.onnx")
    open_scorer(folder, "onnx")  # intact: opens
    where = (lambda m: m) if key == "threshold" else (lambda m: m["params"])
    edit_card(folder, lambda m: where(m).update({key: value}))
    with pytest.raises(ModelFileError, match=f"exported with other settings.*{key}") as err:
        open_scorer(folder, "onnx")
    assert "re-run dualpatch export" in str(err.value)


def test_damaged_openvino_weights_are_refused(exported):
    pytest.importorskip("openvino")
    from dualpatch.serving.export import export_model
    from dualpatch.serving.runtime import open_scorer

    xml = export_model(exported, "openvino", exported / "model.xml")
    record = json.loads((exported / "model.xml.json").read_text())
    assert set(record["files"]) == {"model.xml", "model.bin"}
    open_scorer(exported, "openvino")
    data = bytearray((exported / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (exported / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum differs") as err:
        open_scorer(exported, "openvino")
    assert str(err.value).startswith(f"{xml.with_suffix('.bin')}: ")
