"""``evaluate --runtime onnx|openvino`` scores through the exported scorer and gives the library's
metrics (within the export's parity tolerance); an unknown runtime is refused in one line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

SCORE_RTOL = 1e-4  # the export's stated parity tolerance (tests/test_export.py)


def _scores(out):
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [r["image_id"] for r in rows], np.array([float(r["score"]) for r in rows])


@pytest.mark.slow
def test_evaluate_with_each_runtime_gives_the_library_metrics(
    tmp_path, fitted_dual, demo_root, run_cli
):
    from dualpatch.serving.export import default_export_path, export_model

    model_dir = tmp_path / "model"
    fitted_dual.save(model_dir)
    for fmt in ("onnx", "openvino"):
        export_model(model_dir, fmt, default_export_path(model_dir, fmt))
    results = {}
    for runtime in ("torch", "onnx", "openvino"):
        out = tmp_path / runtime
        proc = run_cli(
            "evaluate", "--model", model_dir, "--dataset", "demo", "--data", demo_root,
            "--out", out, "--runtime", runtime,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        results[runtime] = (json.loads((out / "metrics.json").read_text()), *_scores(out))
    ref_metrics, ref_ids, ref_scores = results["torch"]
    assert len(ref_ids) == 45 and np.ptp(ref_scores) > 0
    for runtime in ("onnx", "openvino"):
        metrics, ids, scores = results[runtime]
        assert ids == ref_ids
        np.testing.assert_allclose(scores, ref_scores, rtol=SCORE_RTOL)
        # rankings are unchanged by deviations this small: image metrics equal, pixel metrics
        # (thresholds over maps that differ by ~1e-6 of their maximum) within 1e-4
        for key in ("image_auroc", "image_ap"):
            assert metrics[key] == pytest.approx(ref_metrics[key], abs=1e-9), (runtime, key)
        for key in ("pixel_auroc", "pixel_aupro"):
            assert metrics[key] == pytest.approx(ref_metrics[key], abs=1e-4), (runtime, key)


def test_evaluate_refuses_an_unknown_runtime_in_one_line(
    tmp_path, fitted_single, demo_root, run_cli
):
    fitted_single.save(tmp_path / "model")
    proc = run_cli(
        "evaluate", "--model", tmp_path / "model", "--dataset", "demo", "--data", demo_root,
        "--out", tmp_path / "out", "--runtime", "tf",
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unknown runtime 'tf'" in lines[0]
    assert not (tmp_path / "out").exists()
