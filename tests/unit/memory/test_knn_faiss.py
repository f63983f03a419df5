"""faiss search: the flat index finds the exact torch search's neighbours; IVF is approximate but
usable; a model records its knn choice and rebuilds the index at load (no index in the file)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dualpatch import PatchCore
from dualpatch.bank.memory import MemoryBank
from dualpatch.bank.neighbours import knn
from dualpatch.errors import ConfigError
from tests.support.common import tiny_params

pytest.importorskip("faiss", reason="faiss-cpu is the 'scale' extra")


def bank_of(rows: torch.Tensor, method: str) -> MemoryBank:
    bank = MemoryBank(knn=method)
    bank.bank_ = rows
    return bank


@pytest.mark.parametrize("k", [1, 5])
def test_faiss_flat_gives_the_exact_neighbours(k):
    gen = torch.Generator().manual_seed(0)
    rows, queries = torch.randn(3000, 48, generator=gen), torch.randn(700, 48, generator=gen)
    want_d, want_i = knn(queries, rows, k)
    got_d, got_i = bank_of(rows, "faiss-flat").query(queries, k)
    assert got_i.shape == (700, k) and got_i.dtype == torch.long
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_d, want_d, rtol=1e-4, atol=1e-4)


def test_faiss_ivf_finds_most_nearest_neighbours():
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(30, 32, generator=gen) * 4
    rows = centres[torch.randint(30, (6000,), generator=gen)] + torch.randn(6000, 32, generator=gen)
    queries = rows[:500] + 0.1 * torch.randn(500, 32, generator=gen)
    _, want = knn(queries, rows, 1)
    _, got = bank_of(rows, "faiss-ivf").query(queries, 1)
    assert (got == want).float().mean() > 0.8


def test_unknown_knn_is_refused_before_any_work(tiny_normal):
    with pytest.raises(ConfigError, match="unknown knn 'annoy'"):
        PatchCore(**tiny_params(knn="annoy")).fit(tiny_normal)


def test_model_records_knn_and_rebuilds_the_index_at_load(tiny_normal, tiny_test, tmp_path):
    exact = PatchCore(**tiny_params()).fit(tiny_normal)
    flat = PatchCore(**tiny_params(knn="faiss-flat")).fit(tiny_normal)
    torch.testing.assert_close(flat.memory_.bank_, exact.memory_.bank_, rtol=0, atol=0)
    flat.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["params"]["knn"] == "faiss-flat"
    loaded = PatchCore.load(tmp_path / "m")
    loaded.progress = False
    assert loaded.memory_.knn == "faiss-flat"
    np.testing.assert_allclose(
        loaded.predict(tiny_test).image_scores, exact.predict(tiny_test).image_scores, rtol=1e-4
    )
