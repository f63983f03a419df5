"""The guard's train-only choice (``online.choose_guard``): a pure function of the inner
validation counts. The flip fixture's test counts favour another candidate; the chooser is never
given them, so its choice cannot follow them."""

from __future__ import annotations

import inspect

from dualpatch.models.online import GUARD, GUARDS, choose_guard


def counts(caught: int, defective: int, refused: int, good: int) -> dict[str, int]:
    return {"caught": caught, "defective": defective, "refused": refused, "good": good}


# inner validation (training items): "score_or_patch" catches most at little cost
INNER = {
    "score_or_patch": counts(9, 10, 1, 50),  # J = 0.88
    "any_defect_like": counts(10, 10, 20, 50),  # J = 0.60
    GUARD: counts(8, 10, 2, 50),  # J = 0.76
}
# the outer test fold: the other way round, "any_defect_like" by far
TEST = {
    "score_or_patch": counts(1, 10, 5, 50),  # J = 0.00
    "any_defect_like": counts(10, 10, 0, 50),  # J = 1.00
    GUARD: counts(5, 10, 5, 50),  # J = 0.40
}


def test_the_choice_follows_the_inner_counts_not_the_test_fold():
    chosen, criterion = choose_guard(INNER)
    assert chosen == "score_or_patch"
    assert criterion["score_or_patch"] == 9 / 10 - 1 / 50
    # the control: the test counts would pick another guard, had the chooser seen them
    assert choose_guard(TEST)[0] == "any_defect_like"


def test_the_chooser_takes_no_test_figures():
    assert list(inspect.signature(choose_guard).parameters) == ["inner", "default"]


def test_refusing_everything_or_nothing_scores_zero():
    _, criterion = choose_guard({"score": counts(10, 10, 50, 50), "patch": counts(0, 10, 0, 50)})
    assert criterion == {"score": 0.0, "patch": 0.0}


def test_ties_go_to_the_default_then_to_fewer_wrongful_refusals():
    tied = {"score": counts(6, 10, 5, 50), GUARD: counts(5, 10, 0, 50)}  # J 0.5 both
    assert choose_guard(tied)[0] == GUARD
    assert choose_guard(tied, default="none of them")[0] == GUARD  # fewer refused
    tied["patch"] = counts(5, 10, 0, 50)
    assert choose_guard(tied, default="score")[0] == "score"
    # same criterion, same refusals: GUARDS' order
    assert choose_guard(tied, default="none")[0] == min(("patch", GUARD), key=list(GUARDS).index)
