"""Golden scores of the guarded rule (the default since issue 23): the ``fitted_dual`` fixture's
novelty level (leave-image-out at fit) and its scores and maps on ``tiny_test``, pinned so that a
refactor of the rule, of tau's measurement or of the scoring path shows. Produced as
``test_golden_scores.py``'s values were (``summary`` there, 7 significant digits), when the rule
was added (with the native-region crops of step 4 there); the older rules' values there are
unchanged by it."""

from __future__ import annotations

import pytest

from tests.unit.scoring.test_golden_scores import GOLDEN, assert_matches

GUARDED = {
    "scores": [13.9476, 13.20226, 13.62488, 15.1775, 20.95395, 14.34738],
    "map_mean": [10.03371, 9.363895, 8.784582, 10.94425, 12.9479, 11.45308],
    "map_max": [12.92094, 12.41142, 11.35884, 13.84106, 18.19464, 13.75296],
    "map_px": [11.84039, 11.23004, 10.76868, 13.3148, 16.45674, 12.81237],
}
#: tau of ``fitted_dual``: leave-image-out over its 6 training images
LEVEL = 22.16017


def test_guarded_scores_are_unchanged(fitted_dual, tiny_test, monkeypatch):
    assert fitted_dual.rule == "guarded"
    assert fitted_dual.novelty_level_ == pytest.approx(LEVEL, rel=1e-5)
    monkeypatch.setitem(GOLDEN, "guarded", GUARDED)
    assert_matches(fitted_dual.predict(tiny_test), "guarded")
