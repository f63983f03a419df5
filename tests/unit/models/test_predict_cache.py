"""Scoring through the feature cache: same scores as without it, and no second extraction."""

from __future__ import annotations

import numpy as np

from dualpatch import DualPatchCore
from tests.support.common import CountingExtractor, tiny_params


def test_cached_test_features_give_the_same_scores(tiny_normal, tiny_crops, tiny_test, tmp_path):
    plain = DualPatchCore(**tiny_params()).fit(tiny_normal, tiny_crops)
    cached = DualPatchCore(**tiny_params(cache_dir=str(tmp_path))).fit(tiny_normal, tiny_crops)
    reference = plain.predict(tiny_test)
    first = cached.predict(tiny_test)
    cached._extractor = counting = CountingExtractor(cached.extractor_)
    second = cached.predict(tiny_test)
    assert counting.images == 0  # the test set came from the cache the second time
    for p in (first, second):
        np.testing.assert_array_equal(p.image_scores, reference.image_scores)
        np.testing.assert_array_equal(p.anomaly_maps, reference.anomaly_maps)
