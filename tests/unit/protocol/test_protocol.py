"""Splits that keep copies together: KolektorSDD item groups, stratified folds, inner splits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dualpatch.experiment.protocol import (
    KOLEKTOR_DUPLICATE_ITEMS,
    inner_split,
    item_number,
    make_splits,
    split_groups,
)
from tests.support.common import requires_kolektor
from tests.support.ksdd2_fixture import make_ksdd2_folder
from tests.support.protocol_fixtures import make_kolektor_folder


def _items(dataset) -> set[int]:
    return {item_number(s) for s in dataset}


@pytest.fixture(scope="module")
def kolektor_copy(tmp_path_factory):
    """Nine items; kos05 copies kos02 file for file, kos08 copies kos03."""
    root = tmp_path_factory.mktemp("kolektor") / "kolektorsdd"
    return make_kolektor_folder(root, items=9, copies={5: 2, 8: 3})


@pytest.mark.parametrize("fold_seed", [0, 1, 2])
def test_kolektor_folds_keep_copied_items_together(kolektor_copy, fold_seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = make_splits("kolektorsdd", kolektor_copy, folds=3, fold_seed=fold_seed)
    assert len(splits) == 3
    tested = []
    for s in splits:
        train, test = _items(s.train), _items(s.test)
        assert not train & test  # items never straddle
        for a, b in ((2, 5), (3, 8)):
            assert (a in test) == (b in test)
        assert s.duplicates.across == []  # so no test image copies a training image
        assert s.train_items == sorted(train)
        tested += sorted(test)
    assert sorted(tested) == list(range(1, 10))  # every item is tested exactly once


def test_default_split_of_the_copy_leaks_and_drop_removes_it(kolektor_copy):
    # kos01-04 train, kos05-09 test: kos05 copies kos02 (3 images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (split,) = make_splits("kolektorsdd", kolektor_copy, train_items=[1, 2, 3, 4])
    assert len(split.duplicates.across) == 6  # kos05 and kos08, three parts each
    assert sum("exact copy" in str(w.message) for w in caught) == 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (dropped,) = make_splits(
            "kolektorsdd", kolektor_copy, train_items=[1, 2, 3, 4], on_duplicates="drop"
        )
    assert _items(dropped.test) == {6, 7, 9}


def test_groups_merge_items_that_share_a_file(kolektor_copy):
    from dualpatch.data import KolektorSDD

    everything = list(KolektorSDD(kolektor_copy, "all"))
    groups = split_groups(everything)
    by_item = {item_number(s): g for s, g in zip(everything, groups, strict=True)}
    assert by_item[2] == by_item[5] and by_item[3] == by_item[8]
    assert len(set(by_item.values())) == 7


def test_inner_split_keeps_groups_and_never_sees_other_data(kolektor_copy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = make_splits("kolektorsdd", kolektor_copy, folds=3)[0]
    inner, validation = inner_split(split.train, seed=0, k=2)
    assert not _items(inner) & _items(validation)
    assert _items(inner) | _items(validation) == _items(split.train)
    for a, b in ((2, 5), (3, 8)):
        if a in _items(split.train):
            assert (a in _items(validation)) == (b in _items(validation))


def test_ksdd2_folds_are_stratified_over_images(tmp_path):
    make_ksdd2_folder(tmp_path / "ksdd2", n_train=18, n_test=12, n_pos_train=6, n_pos_test=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = make_splits("ksdd2", tmp_path / "ksdd2", folds=3)
    test_ids = [s.id for split in splits for s in split.test]
    assert len(test_ids) == len(set(test_ids)) == 30  # the stray "(copy)" pair is not an image
    positives = [int(split.test.labels.sum()) for split in splits]
    assert positives == [3, 3, 3]  # 9 positives, 3 per fold
    assert [len(split.test) for split in splits] == [10, 10, 10]
    for split in splits:
        assert not {s.id for s in split.train} & {s.id for s in split.test}


@requires_kolektor
def test_real_kolektor_duplicate_items_never_straddle_a_fold(kolektor_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = make_splits("kolektorsdd", kolektor_root, folds=3)
        (default,) = make_splits("kolektorsdd", kolektor_root)
    for s in splits:
        test = _items(s.test)
        for a, b in KOLEKTOR_DUPLICATE_ITEMS:
            assert (a in test) == (b in test), (s.name, a, b)
        assert s.duplicates.across == []
    # the old default split (kos01-33 train) puts kos34, a copy of kos27, in test
    pairs = {(item_number(a), item_number(b)) for a, b in default.duplicates.across}
    assert pairs == {(27, 34)} and len(default.duplicates.across) == 8
    # and the groups hold exactly the documented copies
    from dualpatch.data import KolektorSDD

    everything = list(KolektorSDD(kolektor_root, "all"))
    groups = split_groups(everything)
    by_item: dict[int, set[int]] = {}
    for s, g in zip(everything, groups, strict=True):
        by_item.setdefault(int(g), set()).add(item_number(s))
    merged = sorted(tuple(sorted(v)) for v in by_item.values() if len(v) > 1)
    assert merged == sorted(KOLEKTOR_DUPLICATE_ITEMS)
    assert np.unique(groups).size == 48
