"""The exported graph carries each faster-search option's computation (docs/search.md): scores
and maps within the stated 1e-4 of the torch scorer for a float16 bank, a learned projection, a
row budget, and a search cut into several bank chunks by its byte budget."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.common import TINY, tiny_params
from tests.unit.export.test_export import _check_all_runtimes

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

OPTIONS = {
    "float16": {"bank_dtype": "float16"},
    "projection": {"search_dim": 8, "num_neighbors": 3},
    "rows": {"coreset_rows": 25},
}


@pytest.fixture(scope="module")
def images(tiny_test):
    return np.stack([s.image(TINY) for s in tiny_test])


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_search_option_exports_with_parity(tmp_path, tiny_normal, tiny_crops, images, option):
    from dualpatch import DualPatchCore

    model = DualPatchCore(**tiny_params(**OPTIONS[option])).fit(tiny_normal, tiny_crops)
    if option == "float16":
        assert model.memory_.bank_.dtype.is_floating_point and model.memory_.bank_.itemsize == 2
    if option == "rows":
        assert model.memory_.bank_.shape[0] == 25
    scores, _ = _check_all_runtimes(model, tmp_path / option, images)
    assert np.ptp(scores) > 0


def test_a_search_cut_into_bank_chunks_exports_with_parity(
    tmp_path, fitted_dual, images, monkeypatch
):
    """A budget small enough that each bank's search runs in several chunks in the graph."""
    from dualpatch.bank import neighbours
    from dualpatch.serving.export import ScorerModule

    patches = int(fitted_dual.grid_[0] * fitted_dual.grid_[1])
    monkeypatch.setattr(neighbours, "KNN_BUDGET", 4 * 8 * patches * 7)  # 7 bank rows per chunk
    plan = ScorerModule(fitted_dual).plan
    assert plan["normal"]["bank_chunk"] == 7 and plan["normal"]["chunks"] > 3
    assert plan["defect"]["chunks"] > 1
    _check_all_runtimes(fitted_dual, tmp_path / "chunked", images)
