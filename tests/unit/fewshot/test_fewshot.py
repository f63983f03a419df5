"""The few-shot sampler: exactly n defects, reproducible, and generators see only the drawn ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualpatch.augment.manifest import read_manifest
from dualpatch.augment.paste import generate_paste
from dualpatch.data.fewshot import ALL, draw_defects, fewshot_draws
from dualpatch.errors import ConfigError


@pytest.fixture(scope="module")
def defects(demo_train):
    return demo_train.defective()


def test_draws_exactly_n_distinct_defects(defects):
    assert len(defects) >= 5
    for n in (1, 2, 5):
        picked = draw_defects(defects, n, seed=3)
        assert len(picked) == n == len({s.id for s in picked})
        assert all(s.label == 1 for s in picked)
    assert len(draw_defects(defects, ALL, seed=3)) == len(defects)


def test_draws_are_reproducible_and_seeds_differ(defects):
    a = [s.id for s in draw_defects(defects, 2, seed=0)]
    assert a == [s.id for s in draw_defects(list(reversed(defects)), 2, seed=0)]
    others = {tuple(s.id for s in draw_defects(defects, 2, seed=k)) for k in range(1, 6)}
    assert len(others | {tuple(a)}) > 1
    # one draw is nested over n: more shots add defects, they do not swap them
    assert set(a) <= {s.id for s in draw_defects(defects, 5, seed=0)}


def test_fewshot_draws_cover_each_n_and_repeat(defects):
    draws = fewshot_draws(defects, [1, 2, ALL], repeats=3, seed=10)
    assert [(d.shots, d.repeat, d.seed, d.n) for d in draws] == [
        (1, 0, 10, 1), (1, 1, 11, 1), (1, 2, 12, 1),
        (2, 0, 10, 2), (2, 1, 11, 2), (2, 2, 12, 2),
        (ALL, 0, 10, len(defects)),
    ]  # fmt: skip
    assert draws[0].to_json()["ids"] == draws[0].ids


@pytest.mark.parametrize("bad", [0, -1, 10_000, "some", 1.5, True])
def test_bad_shot_counts_are_refused(defects, bad):
    with pytest.raises(ConfigError, match="defect_shots"):
        draw_defects(defects, bad, seed=0)


def test_copy_paste_sees_only_the_drawn_defects(demo_train, tmp_path):
    draw = fewshot_draws(demo_train.defective(), [2], repeats=1, seed=4)[0]
    sources = draw.sources(demo_train)
    assert sources.defective() == list(draw.defects)
    assert sources.normal() == demo_train.normal()
    generate_paste(sources, 12, tmp_path / "paste", seed=0, progress=False)
    allowed = {Path(s.mask_path).resolve() for s in draw.defects}
    others = {Path(s.mask_path).resolve() for s in demo_train.defective()} - allowed
    used = {Path(r.source_mask).resolve() for r in read_manifest(tmp_path / "paste")}
    assert used <= allowed
    assert not used & others
    # both drawn defects get used over 12 images, so the check above is not vacuous
    assert used == allowed
