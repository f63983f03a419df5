"""benchmarks/fidelity_levers.py: a choice for a few-shot outer fold sees only that fold's
training items; the published choice (the default split's kos01-33) is recorded as a leak."""

from __future__ import annotations

import importlib.util

import pytest

from tests.support.common import REPO_ROOT
from tests.support.protocol_fixtures import make_kolektor_folder


@pytest.fixture(scope="module")
def levers():
    spec = importlib.util.spec_from_file_location(
        "fidelity_levers", REPO_ROOT / "benchmarks" / "fidelity_levers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kolektor(tmp_path_factory):
    # 40 items: kos01-33 are the default split's training items, kos34-40 its test items
    return make_kolektor_folder(tmp_path_factory.mktemp("fl") / "kolektorsdd", items=40, parts=2)


def _items(dataset) -> set[str]:
    return {s.id.split("/")[0] for s in dataset}


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_an_outer_folds_choice_sees_none_of_its_test_items(levers, kolektor, fold):
    train, test = levers.choice_split(kolektor, fold)
    a, b = levers.halves(train, 0)
    used = {s.id for s in a} | {s.id for s in b}
    assert used == {s.id for s in train}  # the halves are cut from the fold's training items
    assert not used & {s.id for s in test}
    record = levers.chosen_on(fold, train)
    assert record["leak"].startswith("none") and not set(record["items"]) & _items(test)


def test_the_default_split_choice_is_recorded_as_a_leak_into_the_fewshot_folds(levers, kolektor):
    train, _ = levers.choice_split(kolektor, None)
    assert _items(train) == {f"kos{n:02d}" for n in range(1, 34)}
    # every outer fold's test set holds some of those items: the published choice saw them
    for fold in range(3):
        assert _items(train) & _items(levers.choice_split(kolektor, fold)[1])
    assert levers.chosen_on(None, train)["leak"] == levers.LEAK
    assert "favours synthetic defects" in levers.LEAK
