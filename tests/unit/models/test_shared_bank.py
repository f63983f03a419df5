"""The normal bank is computed once per distinct set of images and coreset settings and shared
through the feature cache (an experiment's runs all need the same one)."""

from __future__ import annotations

import pytest
import torch

from dualpatch import DualPatchCore, PatchCore
from dualpatch.bank import memory
from dualpatch.bank.feature_cache import load_shared_bank
from tests.support.common import CountingExtractor, tiny_params


def test_second_fit_reuses_the_normal_bank(tiny_normal, tiny_crops, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = PatchCore(**tiny_params(cache_dir=cache)).fit(tiny_normal)
    assert len(list((tmp_path / "cache" / "banks").glob("*.safetensors"))) == 1

    def no_coreset(*args, **kwargs):
        raise AssertionError("the coreset was computed again")

    monkeypatch.setattr(memory, "greedy_kcenter", no_coreset)
    again = DualPatchCore(**tiny_params(cache_dir=cache))
    again._extractor = counting = CountingExtractor(first.extractor_)
    again.fit(tiny_normal, tiny_crops)  # the dual model's normal bank is the same one
    assert counting.images == len(tiny_crops)  # only the defect crops went through the backbone
    torch.testing.assert_close(again.memory_.bank_, first.memory_.bank_, rtol=0, atol=0)
    assert again.grid_ == first.grid_

    # other settings or other images: computed anew
    with pytest.raises(AssertionError, match="computed again"):
        PatchCore(**tiny_params(cache_dir=cache, seed=1)).fit(tiny_normal)
    with pytest.raises(AssertionError, match="computed again"):
        PatchCore(**tiny_params(cache_dir=cache)).fit(tiny_normal[:-1])


def test_damaged_shared_bank_is_recomputed(tiny_normal, tmp_path):
    cache = str(tmp_path / "cache")
    first = PatchCore(**tiny_params(cache_dir=cache)).fit(tiny_normal)
    (path,) = (tmp_path / "cache" / "banks").glob("*.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0x40]))
    again = PatchCore(**tiny_params(cache_dir=cache)).fit(tiny_normal)
    torch.testing.assert_close(again.memory_.bank_, first.memory_.bank_, rtol=0, atol=0)
    assert load_shared_bank(path) is not None  # rewritten whole


@pytest.mark.parametrize(
    "constant",
    ["APPROX_SAMPLE", "APPROX_OVERSAMPLE", "APPROX_FIRST", "APPROX_FIRST_PICKS", "APPROX_MARGIN"],
)
def test_every_approx_constant_is_part_of_the_shared_bank_key(constant, tiny_normal, monkeypatch):
    # each of these shapes the approximate coreset's picks; a key without one would hand a bank
    # made under its old value to a fit under the new one
    from dualpatch.models.banks import shared_bank_path

    model = PatchCore(**tiny_params(cache_dir="cache", coreset_method="approx"))
    before = shared_bank_path(model, tiny_normal)
    monkeypatch.setattr(memory, constant, getattr(memory, constant) * 2)
    assert shared_bank_path(model, tiny_normal) != before
