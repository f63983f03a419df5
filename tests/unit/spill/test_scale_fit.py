"""Fit at scale: the past-the-cap (two-pass) k-center of a spilled fit keeps its stated radius
bound against exact greedy; the map scale of a large training set is measured on a fixed number
of evenly spaced images, the same for in-memory, spilled and shared-bank fits."""

from __future__ import annotations

import pytest
import torch

from dualpatch import PatchCore
from dualpatch.bank import spill
from dualpatch.bank.memory import greedy_coreset, kcenter_radius, presample, project, projection_for
from dualpatch.models import banks
from tests.support.common import tiny_params


def radius_to(x: torch.Tensor, centres: torch.Tensor) -> float:
    return float(torch.cdist(x.double(), centres.double()).min(1).values.max())


def test_past_the_cap_kcenter_keeps_its_radius_bound(tiny_normal):
    """Past the cap the coreset is greedy on a seeded pre-sample S of the rows the cap holds.
    Stated bound (docs/large-data.md): radius <= r_S + eps, r_S greedy's radius over S, eps the
    farthest any row lies from S; and exact greedy is within 2x of any k centres' radius."""
    fits = 150
    params = {**tiny_params(), "coreset_min": 20}
    cap = int(spill.row_bytes(128) * fits / spill.PROJECTION_SHARE)
    model = PatchCore(**params, max_memory=cap).fit(tiny_normal)
    assert model.spill_["coreset_rows"] == fits < model.spill_["rows"]

    flat = model.image_features(tiny_normal, None).reshape(-1, 152)
    matrix = projection_for(152, 128, model.seed)
    x, centres = project(flat, matrix), project(model.memory_.bank_, matrix)
    sample = presample(flat.shape[0], fits, model.seed)
    r = radius_to(x, centres)
    r_sample = radius_to(x[sample], centres)
    eps = radius_to(x, x[sample])
    assert r <= r_sample + eps + 1e-4
    r_exact = kcenter_radius(x, greedy_coreset(flat, 20, 128, model.seed))
    assert r_exact <= 2 * r + 1e-4


def test_map_scale_past_its_budget_uses_evenly_spaced_images(tiny_normal, tmp_path, monkeypatch):
    monkeypatch.setattr(banks, "MAP_SCALE_IMAGES", 2)
    plain = PatchCore(**tiny_params()).fit(tiny_normal)
    maps = plain.predict(tiny_normal).anomaly_maps  # of 6 images, the first and the last
    assert plain.map_scale_ == pytest.approx(float(maps[[0, 5]].max()), rel=1e-6)
    assert plain.map_scale_ < float(maps.max())  # an image in between reaches higher here

    cache = str(tmp_path / "c")
    spilled = PatchCore(**tiny_params(max_memory="4GiB", cache_dir=cache)).fit(tiny_normal)
    assert spilled.map_scale_ == pytest.approx(plain.map_scale_, rel=1e-6)
    shared = PatchCore(**tiny_params(max_memory="4GiB", cache_dir=cache))
    shared.fit(tiny_normal)
    assert not hasattr(shared, "spill_")  # the shared normal bank: no store, no coreset
    assert shared.map_scale_ == pytest.approx(plain.map_scale_, rel=1e-6)
