"""A verdict threshold chosen on training data only: image scores of normal training images that
were held out of the memory bank. Test labels never enter it.

The rule: hold out ``fraction`` of the normal training images (a seeded draw, at least one),
fit the bank on the rest, score the held-out ones, and take their ``quantile`` (default 1.0, the
largest score: no held-out normal image would be flagged).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data.base import Sample
from .errors import ConfigError, DataError


def holdout_split(
    normal: Sequence[Sample], fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """(bank images, held-out images): a seeded draw of ``fraction`` of ``normal``."""
    if not 0 < fraction < 1:
        raise ConfigError(f"threshold hold-out fraction {fraction} must lie between 0 and 1")
    normal = list(normal)
    n_out = max(1, int(round(fraction * len(normal))))
    if len(normal) - n_out < 1:
        raise DataError(
            f"{len(normal)} normal training image(s): too few to hold {n_out} out for a threshold"
        )
    order = np.random.default_rng(seed).permutation(len(normal))
    held = set(order[:n_out].tolist())
    return (
        [s for i, s in enumerate(normal) if i not in held],
        [s for i, s in enumerate(normal) if i in held],
    )


def calibrate(model, held_out: Sequence[Sample], quantile: float = 1.0) -> float:
    """Set ``model.threshold_`` (and ``threshold_rule_``) from held-out normal images' scores."""
    if not 0 < quantile <= 1:
        raise ConfigError(f"threshold quantile {quantile} must lie in (0, 1]")
    scores = model.predict(held_out).image_scores
    model.threshold_ = float(np.quantile(scores, quantile))
    model.threshold_rule_ = (
        f"quantile {quantile:g} of the image scores of {len(held_out)} normal training images "
        f"held out of the bank (seed {model.seed})"
    )
    return model.threshold_
