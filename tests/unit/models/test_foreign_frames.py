"""Foreign frames on the demo set: a dual model with the default rule, fitted as ``dualpatch fit``
fits it (normals held out for the threshold), flags every one of them at its stored threshold. The
same banks under the old ``patch`` rule pass them all as good, which is the failure this guards
against (issue 23), so the test can fail."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from dualpatch import DualPatchCore, PatchCore
from dualpatch.data.foreign import FOREIGN_KINDS, foreign_frames, write_frames
from dualpatch.defaults import DUAL_RULE
from dualpatch.threshold import calibrate, holdout_split
from tests.support.common import TINY

#: the CLI's default hold-out fraction (cli_fit.fit --threshold-holdout)
HOLDOUT = 0.2


def fitted(model, bank, held, *defects):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 12 held-out images: the few-images warning
        calibrate(model.fit(bank, *defects), held)
    return model


@pytest.fixture(scope="module")
def setting(demo_train, tmp_path_factory):
    bank, held = holdout_split(demo_train.normal(), HOLDOUT, seed=0)
    params = dict(image_size=TINY, coreset_min=40, coreset_ratio=0.05, progress=False)
    dual = fitted(DualPatchCore(**params), bank, held, demo_train.defective())
    single = fitted(PatchCore(**params), bank, held)
    frames = foreign_frames([s.image() for s in bank[:8]], TINY, seed=0)
    samples = write_frames(frames, tmp_path_factory.mktemp("foreign"))
    return dual, single, held, samples


def flagged(model, samples) -> np.ndarray:
    return model.predict(samples).image_scores > model.threshold_


def test_the_default_dual_rule_flags_every_foreign_frame(setting):
    dual, _, _, samples = setting
    assert dual.rule == DUAL_RULE and len(samples) == len(FOREIGN_KINDS)
    passed = [s.id for s, f in zip(samples, flagged(dual, samples), strict=True) if not f]
    assert passed == [], f"passed as good: {passed}"


def test_the_single_bank_flags_them_too(setting):
    _, single, _, samples = setting
    assert flagged(single, samples).all()


def test_the_patch_rule_passes_them(setting):
    """The old default on the same banks, its threshold set the same way and without the
    image-level check: the frames pass."""
    dual, _, held, samples = setting
    patch = copy.copy(dual)
    patch.rule, patch.gate_summaries_, patch.gate_level_ = "patch", None, None
    with pytest.warns(UserWarning, match="12 held-out normal images"):
        fitted_threshold = calibrate(patch, held)
    assert fitted_threshold == patch.threshold_
    assert not flagged(patch, samples).any()


def test_the_image_level_check_flags_them_under_the_patch_rule_too(setting):
    """With the image-level check (the default), even the unsafe ratio rule flags every frame:
    a frame lacks what every normal image holds, whatever its patches score."""
    dual, _, held, samples = setting
    patch = copy.copy(dual)
    patch.rule = "patch"
    with pytest.warns(UserWarning, match="12 held-out normal images"):
        calibrate(patch, held)
    assert flagged(patch, samples).all()
    assert not flagged(patch, held).any()  # held-out normals sit at or below the threshold
