"""Golden scores of the guarded rule (the default since issue 23): the ``fitted_dual`` fixture's
novelty level (leave-image-out at fit) and its scores and maps on ``tiny_test``, pinned so that a
refactor of the rule, of tau's measurement or of the scoring path shows. Produced as
``test_golden_scores.py``'s values were (``summary`` there, 7 significant digits), when the rule
was added; the older rules' values there are unchanged by it."""

from __future__ import annotations

import pytest

from tests.unit.scoring.test_golden_scores import GOLDEN, assert_matches

GUARDED = {
    "scores": [13.88917, 13.20602, 13.62488, 15.17889, 20.95395, 14.40515],
    "map_mean": [9.972292, 9.311789, 8.76217, 10.87107, 12.80928, 11.4392],
    "map_max": [12.8785, 12.39036, 11.35879, 13.83501, 18.16477, 13.81674],
    "map_px": [11.83666, 11.2566, 10.76841, 13.31972, 16.39869, 12.92808],
}
#: tau of ``fitted_dual``: leave-image-out over its 6 training images
LEVEL = 22.16017


def test_guarded_scores_are_unchanged(fitted_dual, tiny_test, monkeypatch):
    assert fitted_dual.rule == "guarded"
    assert fitted_dual.novelty_level_ == pytest.approx(LEVEL, rel=1e-5)
    monkeypatch.setitem(GOLDEN, "guarded", GUARDED)
    assert_matches(fitted_dual.predict(tiny_test), "guarded")
