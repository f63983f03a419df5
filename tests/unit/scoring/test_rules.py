"""Scoring parameters end to end: k nearest neighbours in both banks, the seed rule inside the
model, re-weighting refused for the dual model, one rule registry, old model files."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from dualpatch import DualPatchCore, PatchCore
from dualpatch.errors import ConfigError
from dualpatch.features.extractor import to_tensor
from dualpatch.scoring import DUAL_RULES, anomaly_map
from tests.support.common import tiny_params
from tests.support.model_files import as_saved_before_the_seal


def brute_force_distances(features: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """(B, h, w) mean distance to the k nearest bank rows, in float64 with torch.cdist."""
    b, h, w, d = features.shape
    dist = torch.cdist(features.reshape(-1, d).double(), bank.double())
    return dist.topk(k, dim=1, largest=False).values.mean(1).reshape(b, h, w)


@pytest.mark.parametrize("k", [1, 3])
def test_seed_rule_inside_the_model(fitted_dual, tiny_test, k):
    """The model's seed map and score, recomputed from the banks by brute force: k nearest in
    both banks, image score max d_n / (max d_d + eps), map = blurred upsampled d_n / (d_d + eps)."""
    model = copy.copy(fitted_dual)
    model.rule, model.num_neighbors = "seed", k
    pred = model.predict(tiny_test)
    size = tuple(model.image_size)
    images = to_tensor([s.image(size) for s in tiny_test])
    feats = model.extractor_(images).features.permute(0, 2, 3, 1)
    d_n = brute_force_distances(feats, model.memory_.bank_, k)
    d_d = brute_force_distances(feats, model.defect_memory_.bank_, k)
    eps = model.eps
    score = d_n.flatten(1).amax(1) / (d_d.flatten(1).amax(1) + eps)
    np.testing.assert_allclose(pred.image_scores, score.numpy(), rtol=1e-4)
    expected_map = anomaly_map((d_n / (d_d + eps)).float(), size, model.blur_sigma)
    np.testing.assert_allclose(pred.anomaly_maps, expected_map.numpy(), rtol=1e-4, atol=1e-6)
    # not the ratio of the two blurred maps (what dualpatch did before it followed the reference)
    blurred_ratio = anomaly_map(d_n.float(), size, model.blur_sigma) / (
        anomaly_map(d_d.float(), size, model.blur_sigma) + eps
    )
    assert np.abs(pred.anomaly_maps - blurred_ratio.numpy()).max() > 1e-3


def test_num_neighbors_moves_both_banks(fitted_dual, tiny_test):
    """k = 3 averages the 3 nearest distances: every patch distance grows or stays, in both banks,
    so the weighted rule's scores change (and the normal bank alone cannot explain the change)."""
    base = copy.copy(fitted_dual)
    base.rule = "patch"
    k3 = copy.copy(base)
    k3.num_neighbors = 3
    feats = base.extractor_(
        to_tensor([s.image(tuple(base.image_size)) for s in tiny_test])
    ).features.permute(0, 2, 3, 1)
    for bank in (base.memory_, base.defect_memory_):
        d1, _ = base._nearest(bank, feats)
        d3, _ = k3._nearest(bank, feats)
        assert torch.all(d3 >= d1 - 1e-5) and (d3 > d1 + 1e-4).float().mean() > 0.9
    p1, p3 = base.predict(tiny_test), k3.predict(tiny_test)
    assert not np.allclose(p1.image_scores, p3.image_scores, rtol=1e-3)


def test_reweight_is_refused_for_the_dual_model(tiny_normal, tiny_crops):
    model = DualPatchCore(**tiny_params(reweight=True))
    with pytest.raises(ConfigError, match="single-bank model"):
        model.fit(tiny_normal, tiny_crops)
    assert not hasattr(model, "memory_")  # refused before any work


def test_reweight_is_refused_by_the_config(demo_root):
    from dualpatch.experiment.config import load_config

    overrides = [f"data={demo_root}", "reweight=true"]
    with pytest.raises(ConfigError, match=r"runs\[1\] is a dual run with reweight"):
        load_config(None, overrides)
    cfg = load_config(None, [f"data={demo_root}", "runs.0.reweight=true"])
    assert cfg["runs"][0]["reweight"] is True  # on a single run it is fine


def test_reweight_is_refused_by_the_cli(run_cli, demo_root, tmp_path):
    args = ["fit", "--dataset", "demo", "--data", demo_root, "--out", tmp_path / "m"]
    res = run_cli(*args, "--bank", "dual", "--reweight", "--image-size", "64", "32")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "single-bank" in lines[0]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_bad_neighbour_counts(value, tiny_normal):
    for name in ("num_neighbors", "reweight_neighbors"):
        with pytest.raises(ConfigError, match=name):
            PatchCore(**tiny_params(**{name: value})).fit(tiny_normal)


def test_one_rule_registry():
    from dualpatch.cli.common import Rule
    from dualpatch.experiment.config import load_config

    assert [r.value for r in Rule] == list(DUAL_RULES)
    for rule in DUAL_RULES:
        assert load_config(None, [f"rule={rule}"])["rule"] == rule
    with pytest.raises(ConfigError, match="rule"):
        load_config(None, ["rule=ratio"])
    with pytest.raises(ConfigError, match="unknown dual rule 'ratio'"):
        DualPatchCore(rule="ratio").check_params()


def test_model_files_from_before_reweight_neighbors(fitted_single, tiny_test, tmp_path):
    """Old model.json files used num_neighbors for the re-weighting's neighbourhood."""
    fitted_single.save(tmp_path / "m")
    as_saved_before_the_seal(tmp_path / "m")  # an old tensor file holds no seal of the card
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["params"]["num_neighbors"] == 1
    params = meta["params"]
    params.pop("reweight_neighbors")
    params["num_neighbors"] = 5
    meta_path.write_text(json.dumps(meta))
    old = PatchCore.load(tmp_path / "m")
    assert (old.num_neighbors, old.reweight_neighbors) == (1, 5)
    np.testing.assert_array_equal(
        old.predict(tiny_test).image_scores, fitted_single.predict(tiny_test).image_scores
    )


def test_saved_dual_model_with_reweight_is_refused(fitted_dual, tmp_path):
    from dualpatch.errors import ModelFileError

    fitted_dual.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["params"]["reweight"] = True
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="single-bank"):
        DualPatchCore.load(tmp_path / "m")
