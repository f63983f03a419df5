"""The exported graph carries each faster-search option's computation (docs/search.md): scores
and maps within the stated 1e-4 of the torch scorer for a float16 bank, a learned projection, a
row budget, a search cut into several bank chunks by its byte budget, and the image-level check
cut into blocks of summary rows the same way."""

from __future__ import annotations

import copy

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


def test_the_image_level_check_cut_into_blocks_exports_with_parity(
    tmp_path, demo_train, images, monkeypatch
):
    """A calibrated model (the image-level check on) whose check runs in several blocks of
    summary rows, planned by bytes like the bank search; foreign frames among the images, so
    that the check decides some of the scores being compared."""
    import warnings

    from dualpatch import DualPatchCore
    from dualpatch.bank import neighbours
    from dualpatch.data.foreign import foreign_frames
    from dualpatch.serving.export import ScorerModule
    from dualpatch.threshold import calibrate, holdout_split

    bank, held = holdout_split(demo_train.normal(), 0.2, seed=0)
    model = DualPatchCore(**tiny_params()).fit(bank, demo_train.defective())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few held-out images
        calibrate(model, held)
    assert model.gate_level_ is not None
    frames = foreign_frames([s.image() for s in bank[:4]], TINY, seed=0)
    batch = np.concatenate([images, np.stack(list(frames.values()))])
    patches = int(model.grid_[0] * model.grid_[1])
    monkeypatch.setattr(neighbours, "KNN_BUDGET", 4 * 8 * patches * 11)  # 11 rows per block
    module = ScorerModule(model)
    rows = model.gate_summaries_.shape[0] * model.gate_summaries_.shape[1]
    assert module.gate_block == 11 and rows > 3 * module.gate_block
    scores, _ = _check_all_runtimes(model, tmp_path / "gated", batch)
    unchecked = copy.deepcopy(model)
    unchecked.gate_level_ = None  # the same model without the check
    patch_only, _ = unchecked.score_images(batch)
    assert (scores > patch_only + 1e-3).any(), "the check decided no score"
