"""benchmarks/fidelity_levers.py: a choice for a few-shot outer fold sees only that fold's
training items; the published choice (the default split's kos01-33) is recorded as a leak."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks import load_script
from tests.support.protocol_fixtures import make_kolektor_folder


@pytest.fixture(scope="module")
def levers():
    return load_script("fidelity_levers")


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


# --- the recipe chooser, per outer fold (issue 24, finding 1): a flip fixture ---------------
#
# For each outer fold F: rows measured on F's training items favour arm "A"; rows that used any
# of F's test items (all of its items, as the published choice on kos01-33 did, or F's training
# items plus one test item) favour arm "B" by far more. A choice that let one of those rows in
# flips to "B".


def _row(arm: str, score: float, items) -> dict:
    return {"arm": arm, "score": score, "items": sorted(items), "part": "fixture"}


def _flip_rows(levers, kolektor) -> tuple[list[dict], dict[int, set[str]]]:
    outer = levers.outer_test_items(kolektor)
    every = set().union(*outer.values())
    rows = []
    for test in outer.values():
        train = every - test
        for seed in range(2):
            rows += [_row("A", 0.8 + seed / 100, train), _row("B", 0.5, train)]
        one = train | {sorted(test)[0]}
        rows += [_row("A", 0.0, every), _row("B", 1.0, every)]
        rows += [_row("A", 0.0, one), _row("B", 1.0, one)]
    return rows, outer


def test_each_outer_fold_chooses_the_recipe_on_its_training_items_only(levers, kolektor):
    rows, outer = _flip_rows(levers, kolektor)
    per_fold = levers.choose_per_fold(rows, outer)
    assert [c["chosen"] for c in per_fold.values()] == ["A", "A", "A"]
    for c in per_fold.values():
        assert c["rows_used"] == 4 and c["rows_left_out"] == len(rows) - 4
        assert c["ranking"][0]["seeds"] == 2


def test_the_recipe_fixture_flips_when_test_items_reach_the_choice(levers, kolektor):
    # the control: the global ranking (every row pooled, as the published choice) picks B
    rows, _ = _flip_rows(levers, kolektor)
    assert levers.rank(rows)[0]["arm"] == "B"


def test_choose_writes_each_folds_choice_and_the_note(levers, kolektor, tmp_path):
    """The script's --choose on a results file: the published part (halves of kos01-33, no
    "items" recorded) favours B; fold 0's own part (``--outer-fold 0``) favours A."""
    outer = levers.outer_test_items(kolektor)
    train0 = sorted(set().union(*outer.values()) - outer[0])
    unit = dict.fromkeys(levers.SCORED, 1.0)

    def part(a: float, b: float, **extra) -> dict:
        ref = {"real defects of the generating half, in place": {"mean": unit, "A->B": unit}}
        arms = {"A": {"mean": dict.fromkeys(levers.SCORED, a)},
                "B": {"mean": dict.fromkeys(levers.SCORED, b)}}  # fmt: skip
        return {"references": ref, "arms": arms, **extra}

    published = [f"kos{n:02d}" for n in range(1, 34)]
    results = {
        "halves": {"A": published[:16], "B": published[16:]},
        "paste": part(0.1, 0.9),
        "paste outer0": part(0.7, 0.6, items=train0, outer_fold=0),
    }
    path = tmp_path / "fl.json"
    path.write_text(json.dumps(results))
    levers.choose(path, kolektor)
    selection = json.loads(path.read_text())["selection"]
    assert selection["ranking"][0]["arm"] == "B"  # the global ranking, as published
    per_fold = selection["per_outer_fold"]
    assert per_fold["fold0"]["chosen"] == "A" and per_fold["fold0"]["rows_used"] == 2
    assert per_fold["fold1"]["chosen"] is None and per_fold["fold2"]["chosen"] is None
    assert "fewshot_cv.json" in selection["note"]
    assert "No train-only choice for fold1, fold2" in selection["note"]


def test_older_parts_keep_their_items_when_a_new_run_replaces_the_halves(levers):
    published = [f"kos{n:02d}" for n in range(1, 34)]
    results = {"halves": {"A": published[:16], "B": published[16:]}, "paste": {"arms": {}},
               "ddpm": {"arms": {}}, "ddpm_selection": {"ranking": []}}  # fmt: skip
    levers.keep_items(results)
    results["halves"] = {"A": ["kos40"], "B": ["kos41"]}  # an --outer-fold run's halves
    assert levers.part_items(results, results["paste"]) == published
    assert levers.part_items(results, results["ddpm"]) == published
    assert "items" not in results["ddpm_selection"]
