"""Exported scorers (ONNX, OpenVINO) give the library's scores and maps, for every bank and rule.

Tolerances (stated in the README): image scores within 1e-4 relative, maps within 1e-4 of the
map's largest value. The runtimes' convolutions and matrix products round differently from
torch's; measured deviations on KolektorSDD are recorded by benchmarks/line_speed.py.
"""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest

from tests.support.common import TINY, requires_kolektor, tiny_params

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

SCORE_RTOL = 1e-4
MAP_RTOL = 1e-4
VARIANTS = ["single", "dual-guarded", "dual-weighted", "dual-patch", "dual-seed"]
#: the mean over k nearest bank entries (num_neighbors) is part of the graph too
K3_VARIANTS = ["single-k3", "dual-seed-k3", "dual-guarded-k3"]


def _variant(fitted_single, fitted_dual, name):
    base, _, rest = name.partition("-")
    model = copy.copy(fitted_single if base == "single" else fitted_dual)
    if base == "dual":
        model.rule = rest.split("-")[0]
    if name.endswith("-k3"):
        model.num_neighbors = 3
    return model


def assert_parity(reference, scores, maps) -> tuple[float, float]:
    """Assert the stated tolerances; return the deviations measured (score relative, map
    relative to the largest map value)."""
    ref_scores, ref_maps = reference
    assert scores.shape == ref_scores.shape and maps.shape == ref_maps.shape
    np.testing.assert_allclose(scores, ref_scores, rtol=SCORE_RTOL, atol=0)
    np.testing.assert_allclose(maps, ref_maps, rtol=0, atol=MAP_RTOL * np.abs(ref_maps).max())
    score_dev = float((np.abs(scores - ref_scores) / np.abs(ref_scores)).max())
    return score_dev, float(np.abs(maps - ref_maps).max() / np.abs(ref_maps).max())


def _check_all_runtimes(model, model_dir, images, deviations: dict | None = None):
    from dualpatch.serving.runtime import open_scorer

    model.save(model_dir)
    torch_scorer = open_scorer(model_dir, "torch", threads=1)
    reference = torch_scorer.score_images(images)
    # the torch runtime is the library's scoring path
    lib_scores, _ = model.score_images(images)
    np.testing.assert_allclose(reference[0], lib_scores, rtol=1e-6)
    for runtime in ("onnx", "openvino"):
        from dualpatch.serving.export import default_export_path, export_model

        export_model(model_dir, runtime, default_export_path(model_dir, runtime))
        scorer = open_scorer(model_dir, runtime, threads=1)
        batch_dev = assert_parity(reference, *scorer.score_images(images))
        # batch size is free: one image alone gives the same as within the batch
        one_score, one_map = scorer.score_images(images[1:2])
        one_dev = assert_parity((reference[0][1:2], reference[1][1:2]), one_score, one_map)
        if deviations is not None:
            deviations[runtime] = tuple(max(a, b) for a, b in zip(batch_dev, one_dev, strict=True))
    return reference


@pytest.mark.parametrize("variant", VARIANTS + K3_VARIANTS)
def test_exported_scorer_matches_torch_on_demo(
    tmp_path, fitted_single, fitted_dual, tiny_test, variant
):
    model = _variant(fitted_single, fitted_dual, variant)
    images = np.stack([s.image(TINY) for s in tiny_test])
    scores, _ = _check_all_runtimes(model, tmp_path / variant, images)
    # the scores separate something: good images (first three) are not all equal to defects
    assert np.ptp(scores) > 0


@requires_kolektor
@pytest.mark.slow
def test_exported_scorer_matches_torch_on_kolektorsdd(tmp_path, kolektor_root):
    from dualpatch import DualPatchCore, PatchCore
    from dualpatch.data import KolektorSDD

    size = (320, 128)
    train, test = KolektorSDD(kolektor_root, "train"), KolektorSDD(kolektor_root, "test")
    common = dict(image_size=size, coreset_min=200, progress=False)
    normal, defective = train.normal()[:6], train.defective()[:4]
    samples = test.normal()[:2] + test.defective()[:2]
    images = np.stack([s.image(size) for s in samples])
    defective_images = np.stack([s.image(size) for s in defective[:2]])
    single = PatchCore(**common).fit(normal)
    dual = DualPatchCore(**common).fit(normal, defective)
    for name in VARIANTS:
        model = _variant(single, dual, name)
        deviations: dict = {}
        # guarded: every image, a copy of a defect-bank image too (d_d = 0, where the ratio
        # rules' d_d + eps makes the runtimes disagree)
        batch = np.concatenate([images, defective_images]) if "guarded" in name else images
        _check_all_runtimes(model, tmp_path / name, batch, deviations)
        for runtime, (score_dev, map_dev) in deviations.items():
            # measured figures for the README (pytest -s); the assertions above hold them to 1e-4
            print(f"parity kolektorsdd {name} {runtime}: score {score_dev:.2e}, map {map_dev:.2e}")


def test_guarded_export_parity_on_defect_bank_images(tmp_path, tiny_normal, demo_train, tiny_test):
    """Every image in the parity check, the hard ones included: defective training images whose
    patches are defect-bank entries (d_d = 0). The ratio rules divide float32 noise by eps there
    and the runtimes disagree; the guarded rule's denominator d_n + d_d is never below d_n."""
    from dualpatch import DualPatchCore

    defective = demo_train.defective()[:3]
    model = DualPatchCore(**tiny_params()).fit(tiny_normal, defective)
    assert model.rule == "guarded"
    samples = defective + list(tiny_test)
    images = np.stack([s.image(TINY) for s in samples])
    distances = model.bank_distances(defective)["defect"]
    assert float(distances.flatten(1).amin(1).max()) < 1e-3  # each holds a bank entry
    _check_all_runtimes(model, tmp_path / "guarded", images)


def test_export_records_threshold_and_novelty_level(tmp_path, fitted_dual):
    import onnx

    from dualpatch.serving.export import export_model

    model = copy.copy(fitted_dual)
    model.threshold_ = 12.5
    model.save(tmp_path / "m")
    out = export_model(tmp_path / "m", "onnx", tmp_path / "m" / "model.onnx")
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert float(props["dualpatch_threshold"]) == 12.5
    assert float(props["dualpatch_novelty_level"]) == pytest.approx(model.novelty_level_)
    assert props["dualpatch_rule"] == "guarded"


def test_export_refuses_reweight_in_one_line(tmp_path, tiny_normal, run_cli):
    from dualpatch import PatchCore

    PatchCore(**tiny_params(reweight=True)).fit(tiny_normal[:2]).save(tmp_path / "m")
    proc = run_cli(
        "export", "--model", tmp_path / "m", "--format", "onnx", "--out", tmp_path / "x.onnx"
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "reweight" in lines[0]
    assert not (tmp_path / "x.onnx").exists()


def test_export_refuses_a_faiss_knn(fitted_single):
    from dualpatch.errors import ConfigError
    from dualpatch.serving.export import check_exportable

    model = copy.copy(fitted_single)
    model.knn = "faiss-flat"
    with pytest.raises(ConfigError, match="k-NN backend is 'faiss-flat'"):
        check_exportable(model)


def test_stale_export_is_refused(tmp_path, fitted_single, tiny_normal):
    from dualpatch import PatchCore
    from dualpatch.errors import ModelFileError
    from dualpatch.serving.export import export_model
    from dualpatch.serving.runtime import open_scorer

    fitted_single.save(tmp_path / "a")
    export_model(tmp_path / "a", "onnx", tmp_path / "a" / "model.onnx")
    other = PatchCore(**tiny_params(seed=1)).fit(tiny_normal[:3]).save(tmp_path / "b")
    with pytest.raises(ModelFileError, match="other model tensors"):
        open_scorer(other, "onnx", exported=tmp_path / "a" / "model.onnx")


def test_cli_export_and_predict_with_each_runtime(tmp_path, fitted_dual, tiny_test, run_cli):
    model_dir = tmp_path / "model"
    fitted_dual.save(model_dir)
    proc = run_cli("export", "--model", model_dir, "--format", "onnx")
    assert proc.returncode == 0, proc.stderr
    assert "MiB" in proc.stdout and (model_dir / "model.onnx").is_file()
    files = [str(s.image_path) for s in tiny_test[:3]]
    scores = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / runtime
        proc = run_cli("predict", *files, "--model", model_dir, "--out", out, "--runtime", runtime)
        assert proc.returncode == 0, proc.stderr
        with open(out / "scores.csv") as f:
            scores[runtime] = np.array([float(r["score"]) for r in csv.DictReader(f)])
        assert len(list((out / "maps").glob("*.png"))) == 3
    np.testing.assert_allclose(scores["onnx"], scores["torch"], rtol=SCORE_RTOL)
    bad = run_cli(
        "predict", files[0], "--model", model_dir, "--out", tmp_path / "x", "--runtime", "tf"
    )
    assert bad.returncode == 1 and "unknown runtime 'tf'" in bad.stderr
