"""The feature source: built once by the estimator and passed down (cache, spill, defect
features, Ray fit); the normal bank builder returns values and sets nothing on the estimator."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from dualpatch import PatchCore
from dualpatch.models import banks
from tests.support.common import TINY, CountingExtractor, tiny_params


def test_built_once_per_setting_of_what_shapes_features():
    model = PatchCore(**tiny_params())
    source = model.feature_source()
    assert model.feature_source() is source
    assert (source.image_size, source.batch_size, source.cache_dir) == (TINY, 8, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        source.batch_size = 2  # type: ignore[misc]
    model.image_size = [96, 32]  # as a caller may set it: a list
    other = model.feature_source()
    assert other is not source and other.image_size == (96, 32)
    assert other.key_prefix != source.key_prefix  # another size, other cache entries


def test_key_and_features_are_the_estimators(tiny_normal, tmp_path):
    model = PatchCore(**tiny_params(cache_dir=str(tmp_path / "cache")))
    source = model.feature_source()
    assert [source.key(s) for s in tiny_normal] == [model._cache_key(s) for s in tiny_normal]
    counting = CountingExtractor(model.extractor_)
    model._extractor = counting  # the source calls the estimator's backbone, on first use
    feats = source.features(tiny_normal[:2], None)
    assert counting.images == 2 and feats.shape[:3] == (2, TINY[0] // 8, TINY[1] // 8)
    again = PatchCore(**tiny_params(cache_dir=str(tmp_path / "cache"))).image_features(
        tiny_normal[:2], None
    )  # read back from the cache this source wrote
    assert torch.equal(feats, again)


def test_a_copy_of_the_estimator_has_its_own_source():
    model = PatchCore(**tiny_params())
    twin = copy.copy(model)
    assert twin.feature_source() is not model.feature_source()


def test_the_normal_bank_builder_returns_values_and_sets_nothing(tiny_normal):
    model = PatchCore(**tiny_params())
    built = banks.normal_bank(model, list(tiny_normal))
    assert not hasattr(model, "memory_") and not hasattr(model, "grid_")
    assert built.grid == (TINY[0] // 8, TINY[1] // 8) and built.spill is None
    fitted = PatchCore(**tiny_params()).fit(tiny_normal)
    assert torch.equal(built.memory.bank_, fitted.memory_.bank_)
    assert fitted.grid_ == built.grid
