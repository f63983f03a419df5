"""Which guard keeps a defect out of the normal bank, chosen on training data only.

Nested: each outer fold (``--folds`` group-aware stratified folds of every image) splits its
TRAINING items once more (``protocol.inner_split``, k = 3: 2/3 inner training, 1/3 validation).
A dual model with the library's defaults (normal bank ``--coreset``) is fitted on the inner
training set: its normal images less a seeded 20 % held out for the threshold and the guard's
limits, its defective images' masks for the defect bank. Every candidate guard of
``online.GUARDS`` is then asked about each validation image as if an operator tried to add it to
the normal bank: a defective training image added by mistake, caught? A good training image,
wrongly refused? ``online.choose_guard`` picks from those counts alone (catch rate minus
wrongful-refusal rate); each outer fold keeps its own choice. Only then is the same model fitted on
the outer fold's whole training set and the outer test images asked the same question: the
procedure's figures are each fold's chosen guard on its own test fold, with a fold-level
Nadeau-Bengio interval. Every candidate's test figures are written too, labelled as not used.

    python benchmarks/online_guard_choice.py --dataset kolektorsdd --data ../shared/data/kolektorsdd
    python benchmarks/online_guard_choice.py --dataset folder --data ../shared/data/bsdata \
        --name bsdata --image-size 128 320
    python benchmarks/online_guard_choice.py --dataset folder \
        --data ../shared/data/battery_weld/welding --name battery_weld --image-size 160 256

Writes ``benchmarks/results/online_guard_choice_<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from online_line import run_info  # noqa: E402  (benchmarks/: the script's own folder)

from dualpatch import DualPatchCore  # noqa: E402
from dualpatch.defaults import default_cache  # noqa: E402
from dualpatch.experiment.protocol import inner_split, make_splits  # noqa: E402
from dualpatch.metrics.uncertainty import corrected_t_interval  # noqa: E402
from dualpatch.models.online import (  # noqa: E402
    GUARD,
    GUARD_FACTOR,
    GUARDS,
    choose_guard,
    guard_limits,
    guard_measures,
    guard_reasons,
)
from dualpatch.threshold import calibrate, holdout_split  # noqa: E402

INNER_FOLDS = 3


def fit_dual(train, seed: int, cache: str | None, params: dict) -> tuple[DualPatchCore, list]:
    """A default dual model on ``train``'s normals less 20 % held out (threshold: quantile 1.0
    of their scores) and its defects; (model, held-out normals)."""
    bank, held = holdout_split(train.normal(), 0.2, seed)
    model = DualPatchCore(seed=seed, cache_dir=cache, progress=False, **params)
    model.fit(bank, train.defective())
    calibrate(model, held)
    return model, held


def guard_counts(model, held: list, images: list) -> dict[str, dict[str, int]]:
    """Per candidate guard: of ``images`` offered to the normal bank, the defective ones refused
    (``caught``) and the good ones refused, the false alarms among the good ones too."""
    measures = guard_measures(model, model.image_features(images, None))
    labels = np.array([s.label for s in images])
    bad, good = labels == 1, labels == 0
    alarms = good & (measures["score"] > model.threshold_)
    out = {}
    for name in GUARDS:
        limits = guard_limits(model, GUARD_FACTOR, held, name)
        refused = np.array([r is not None for r in guard_reasons(measures, limits)])
        out[name] = {
            "caught": int((refused & bad).sum()), "defective": int(bad.sum()),
            "refused": int((refused & good).sum()), "good": int(good.sum()),
            "false_alarms": int(alarms.sum()),
            "false_alarms_refused": int((refused & alarms).sum()),
        }  # fmt: skip
    return out


def rates(c: dict[str, int]) -> dict[str, float]:
    return {"catch_rate": c["caught"] / max(1, c["defective"]),
            "wrongful_refusal_rate": c["refused"] / max(1, c["good"])}  # fmt: skip


def one_fold(split, seed: int, cache: str | None, params: dict) -> dict:
    """The choice on the inner split of ``split.train`` (the test fold is not read), then the
    outer test figures of every candidate."""
    inner_train, validation = inner_split(split.train, seed=seed, k=INNER_FOLDS)
    model, held = fit_dual(inner_train, seed, cache, params)
    inner = guard_counts(model, held, list(validation))
    chosen, criterion = choose_guard(inner)
    model, held = fit_dual(split.train, seed, cache, params)
    outer = guard_counts(model, held, list(split.test))
    return {
        "fold": split.name, "chosen": chosen, "inner_criterion": criterion, "inner": inner,
        "inner_sizes": {"train": len(inner_train), "validation": len(validation)},
        "outer_test": outer, "outer_threshold": model.threshold_,
    }  # fmt: skip


def summary(folds: list[dict], test_share: float) -> dict:
    """Fold-level means with Nadeau-Bengio intervals: the procedure (each fold's own choice) and,
    not used to choose, every fixed candidate."""

    def interval(pick) -> dict:
        per = [rates(pick(f)) for f in folds]
        return {k: corrected_t_interval([r[k] for r in per], test_share) for k in per[0]}

    return {
        "procedure": interval(lambda f: f["outer_test"][f["chosen"]]),
        "fixed_candidates_not_used_to_choose": {
            name: interval(lambda f, n=name: f["outer_test"][n]) for name in GUARDS
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="kolektorsdd")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/kolektorsdd")
    parser.add_argument("--name", default=None, help="Dataset name in the output.")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coreset", type=float, default=0.01, help="Normal bank coreset ratio.")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    name = args.name or args.dataset
    torch.set_num_threads(1)
    started, info = time.time(), run_info()  # the commit and load when it started
    cache = str(default_cache()) if default_cache() else None
    params = {"coreset_ratio": args.coreset}
    if args.image_size:
        params["image_size"] = tuple(args.image_size)
    splits = make_splits(args.dataset, args.data, args.folds, None, "drop", args.fold_seed)
    folds = [one_fold(s, args.seed, cache, params) for s in splits]
    result = {
        "command": f"python benchmarks/online_guard_choice.py --dataset {args.dataset} --data "
        f"{args.data} --name {name} --folds {args.folds} --fold-seed {args.fold_seed} --seed "
        f"{args.seed} --coreset {args.coreset}"
        + (f" --image-size {args.image_size[0]} {args.image_size[1]}" if args.image_size else ""),
        "dataset": name,
        "criterion": "catch rate - wrongful-refusal rate on the inner validation images "
        "(online.choose_guard); ties to the library's guard",
        "library_guard_when_run": GUARD,
        "guards": {k: list(v) for k, v in GUARDS.items()},
        "guard_factor": GUARD_FACTOR,
        "model": {
            "rule": "default",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        },  # fmt: skip
        "folds": folds,
        "choices": [f["chosen"] for f in folds],
        "summary": summary(folds, 1.0 / (args.folds - 1)),
        "interval": "Nadeau-Bengio corrected t over outer folds (test share 1/(folds-1))",
        "seconds": round(time.time() - started, 1),
        **info,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"online_guard_choice_{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"choices": result["choices"], "procedure": result["summary"]["procedure"]},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
