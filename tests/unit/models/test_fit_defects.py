"""Refitting the defect bank alone equals a full fit with those defects."""

from __future__ import annotations

import pytest
import torch

from dualpatch import DualPatchCore
from dualpatch.errors import ConfigError
from tests.support.common import tiny_params


def test_fit_defects_equals_a_full_fit(tiny_normal, tiny_crops):
    first, second = tiny_crops[:2], tiny_crops[2:]
    model = DualPatchCore(**tiny_params()).fit(tiny_normal, first)
    normal_bank = model.memory_.bank_
    settings = {"method": "noise", "n": 7}
    model.defect_feature_augment = settings
    model.fit_defects(second)
    fresh = DualPatchCore(**tiny_params(defect_feature_augment=settings))
    fresh.fit(tiny_normal, second)
    assert model.memory_.bank_ is normal_bank  # untouched
    assert torch.equal(model.defect_memory_.bank_, fresh.defect_memory_.bank_)


def test_fit_defects_needs_a_fitted_model(tiny_crops):
    with pytest.raises(ConfigError, match="not fitted"):
        DualPatchCore(**tiny_params()).fit_defects(tiny_crops)
