"""The few-shot protocol: the defect bank (and every synthetic source) gets n real defects only.

A *draw* picks ``n`` defective training images at random under a seed. Draw ``d`` of a run orders
the defective images by one seeded permutation and takes its first ``n``, so for one draw the sets
are nested (n = 1 is inside n = 2, ...): a curve over n then shows what more defects add, not what
a luckier pick adds. ``Draw.sources`` is the dataset a generator may see: every normal training
image and the drawn defects, never the others.

    draws = fewshot_draws(train.defective(), [1, 2, 5, 10, "all"], repeats=3, seed=0)
    for d in draws:
        model.fit(train.normal(), d.defects)
        generate_paste(d.sources(train), 100, out, seed=d.seed)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dualpatch.data.base import Dataset, Sample
from dualpatch.errors import ConfigError

ALL = "all"
Shots = int | str

#: what the advice is read from, recorded with it: the pick is made on test-fold comparisons, not
#: on training data, so it is a reading of the test figures, not an untouched estimate
ADVICE_EVIDENCE = (
    "test folds, uncorrected: read from paired bootstraps on the same test images these figures"
    " report, one per (source, metric), with no correction for multiple comparisons; not chosen"
    " on training data"
)


def check_shots(n: Shots, available: int) -> int:
    """``n`` as a count of defective images (``"all"``: every one); ConfigError if out of range."""
    if n == ALL:
        return available
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ConfigError(f"defect_shots: {n!r} is neither a whole number nor 'all'")
    if not 1 <= n <= available:
        raise ConfigError(
            f"defect_shots: {n} asked, but the training split has {available} defective image(s)"
        )
    return int(n)


def check_shots_value(value: Any) -> bool:
    """True for a usable ``defect_shots``: a non-empty list of distinct whole numbers >= 1 and/or
    ``all`` (a single value is accepted as a list of one, see ``normalise_shots``)."""
    if value is None:
        return True
    if not isinstance(value, list) or not value:
        return False
    ok = all(x == ALL or (isinstance(x, int) and not isinstance(x, bool) and x >= 1) for x in value)
    return ok and len({str(x) for x in value}) == len(value)


def normalise_shots(value: Any) -> Any:
    """``5`` or ``all`` -> a list of one; anything else unchanged (validated afterwards)."""
    if value == ALL or (isinstance(value, int) and not isinstance(value, bool)):
        return [value]
    return value


def draw_defects(defects: Sequence[Sample], n: Shots, seed: int) -> list[Sample]:
    """``n`` of ``defects`` picked at random under ``seed`` (in a fixed order of their ids).

    The permutation depends on ``seed`` and the ids only, not on the order given, so the same seed
    picks the same images however the list was built; a larger n extends a smaller one.
    """
    count = check_shots(n, len(defects))
    ordered = sorted(defects, key=lambda s: s.id)
    if len({s.id for s in ordered}) != len(ordered):
        raise ConfigError("defect_shots: defective samples must have distinct ids")
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [ordered[i] for i in sorted(order[:count])]


@dataclass(frozen=True)
class Draw:
    """One few-shot draw: the shot count asked for, the draw's seed and the defects it picked."""

    shots: Shots
    repeat: int
    seed: int
    defects: tuple[Sample, ...]

    @property
    def n(self) -> int:
        return len(self.defects)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.defects]

    def sources(self, train: Dataset) -> Dataset:
        """``train``'s normal images plus this draw's defects: all a synthetic source may see.

        Generators take this as their dataset, so the n drawn defects are the only real defects
        they can copy, learn from or place.
        """
        subset = Dataset(train.normal() + list(self.defects), train.root)
        subset.name = train.name
        return subset

    def to_json(self) -> dict:
        return {"shots": self.shots, "repeat": self.repeat, "seed": self.seed, "ids": self.ids}


def fewshot_draws(
    defects: Sequence[Sample], shots: Sequence[Shots], repeats: int = 3, seed: int = 0
) -> list[Draw]:
    """``repeats`` draws for each n in ``shots``; draw r uses seed ``seed + r`` for every n.

    ``"all"`` takes every defect, once: its draws would all be equal.
    """
    if repeats < 1:
        raise ConfigError(f"defect_shots: repeats must be at least 1, got {repeats}")
    out = []
    for n in shots:
        for r in range(1 if n == ALL else repeats):
            picked = draw_defects(defects, n, seed + r)
            out.append(Draw(n, r, seed + r, tuple(picked)))
    return out
