"""One scorer contract: the fitted estimators and the torch, ONNX and OpenVINO runtimes all keep
``prediction.Scorer`` (``image_size``, ``score_images``); the torch runtime is the estimator's
own ``predict`` (1e-6), the exported graphs are within the export's parity tolerance (1e-4), and
``predict`` gives one result type whichever runtime scores, without torch on the ONNX path."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from dualpatch.prediction import Prediction, Scorer
from dualpatch.serving.runtime import RUNTIMES, load_for_scoring, open_scorer
from tests.support.common import TINY

#: the export's stated parity tolerance (tests/unit/export/test_export.py)
EXPORT_RTOL = 1e-4
MODULES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}


def _needs(runtime: str) -> None:
    if importlib.util.find_spec(MODULES[runtime]) is None:
        pytest.skip(f"{MODULES[runtime]} is not installed")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fitted_dual):
    """The dual fixture model saved, with its ONNX and OpenVINO exports where they can be made."""
    folder = tmp_path_factory.mktemp("runtime") / "dual"
    fitted_dual.save(folder)
    for runtime in ("onnx", "openvino"):
        if importlib.util.find_spec(MODULES[runtime]) is not None:
            from dualpatch.serving.export import default_export_path, export_model

            export_model(folder, runtime, default_export_path(folder, runtime))
    return folder


@pytest.fixture(scope="module")
def images(tiny_test) -> np.ndarray:
    return np.stack([s.image(TINY) for s in tiny_test])


def _assert_contract(scorer, images: np.ndarray) -> None:
    assert isinstance(scorer, Scorer)
    assert not hasattr(scorer, "score")  # one method name, no old alias
    scores, maps = scorer.score_images(images)
    assert scores.shape == (len(images),) and scores.dtype == np.float32
    assert maps.shape == (len(images), *TINY) and maps.dtype == np.float32
    assert np.isfinite(scores).all() and np.ptp(scores) > 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_keeps_the_scorer_contract(model_dir, images, runtime):
    _needs(runtime)
    _assert_contract(open_scorer(model_dir, runtime, threads=1), images)


@pytest.mark.parametrize("kind", ["single", "dual"])
def test_the_fitted_estimators_keep_the_scorer_contract(fitted_single, fitted_dual, images, kind):
    _assert_contract(fitted_single if kind == "single" else fitted_dual, images)


@pytest.mark.parametrize("kind", ["single", "dual"])
def test_torch_score_images_is_the_estimators_predict(
    tmp_path, fitted_single, fitted_dual, tiny_test, images, kind
):
    model = fitted_single if kind == "single" else fitted_dual
    model.save(tmp_path / kind)
    scores, maps = open_scorer(tmp_path / kind, "torch", threads=1).score_images(images)
    pred = model.predict(tiny_test)
    np.testing.assert_allclose(scores, pred.image_scores, rtol=1e-6)
    np.testing.assert_allclose(maps, pred.anomaly_maps, rtol=1e-6)


def test_the_feature_cache_path_scores_as_score_images(tmp_path, fitted_dual, tiny_test, images):
    """``predict`` with a feature cache scores cached features, not images, through the same
    loop; its scores are those of ``score_images`` on the images."""
    model = copy.copy(fitted_dual)
    model.cache_dir = str(tmp_path / "cache")
    scores, maps = model.score_images(images)
    for _ in range(2):  # filling the cache, then reading it
        pred = model.predict(tiny_test)
        np.testing.assert_allclose(pred.image_scores, scores, rtol=1e-6)
        np.testing.assert_allclose(pred.anomaly_maps, maps, rtol=1e-6)
    assert any((tmp_path / "cache").rglob("*.safetensors"))


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_exported_score_images_matches_predict(model_dir, fitted_dual, tiny_test, images, runtime):
    _needs(runtime)
    scores, maps = open_scorer(model_dir, runtime, threads=1).score_images(images)
    pred = fitted_dual.predict(tiny_test)
    np.testing.assert_allclose(scores, pred.image_scores, rtol=EXPORT_RTOL)
    largest = np.abs(pred.anomaly_maps).max()
    np.testing.assert_allclose(maps, pred.anomaly_maps, rtol=0, atol=EXPORT_RTOL * largest)


def test_torch_and_onnx_predict_return_the_one_result_type(model_dir, tiny_test):
    _needs("onnx")
    by_runtime = {
        rt: load_for_scoring(model_dir, rt).predict(tiny_test) for rt in ("torch", "onnx")
    }
    torch_pred, onnx_pred = by_runtime["torch"], by_runtime["onnx"]
    assert type(torch_pred) is Prediction and type(onnx_pred) is Prediction
    assert onnx_pred.ids == torch_pred.ids == [s.id for s in tiny_test]
    assert onnx_pred.labels.tolist() == torch_pred.labels.tolist() == [s.label for s in tiny_test]
    assert onnx_pred.image_scores.dtype == torch_pred.image_scores.dtype == np.float64
    np.testing.assert_allclose(onnx_pred.image_scores, torch_pred.image_scores, rtol=EXPORT_RTOL)


def test_the_onnx_predict_path_never_imports_torch(model_dir, tiny_test, cli_env):
    _needs("onnx")
    paths = [str(s.image_path) for s in tiny_test]
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from dualpatch.data.base import Sample\n"
        "from dualpatch.serving.runtime import load_for_scoring\n"
        f"samples = [Sample(p, Path(p), None, -1) for p in {paths!r}]\n"
        f"pred = load_for_scoring({str(model_dir)!r}, 'onnx').predict(samples)\n"
        "print(type(pred).__module__, len(pred.ids), 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["dualpatch.prediction", str(len(paths)), "False"]
