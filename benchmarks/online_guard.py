"""Poisoning the normal bank by mistake: each defective KolektorSDD test image is added to the
normal bank of a fitted model, one at a time; was it refused by the guard, and how far does recall
on the defective test images fall at the stored threshold when it is forced in? And the guard's
cost: how many good test images it would refuse (the false alarms among them: what an operator
would confirm as good). The guard's limits come from the held-out normal images, as
``add_normal(..., held_out=...)`` sets them.

The model is what a user gets: defaults, fit on the training split's normal images less a seeded
20 % held out for the threshold (quantile 1.0 of their scores), the defect bank from the training
defects' mask patches. The single-bank model shares its normal bank and held-out images. Each
trial starts from the fitted banks; the threshold is kept as stored (held-out re-check off), so
the recall change is the bank's alone. Test labels choose nothing here: they are only counted.

    python benchmarks/online_guard.py --data ../shared/data/kolektorsdd

Writes ``benchmarks/results/online_guard.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dualpatch import DualPatchCore, PatchCore  # noqa: E402
from dualpatch.defaults import default_cache  # noqa: E402
from dualpatch.experiment.protocol import make_splits  # noqa: E402
from dualpatch.models.online import GUARD_FACTOR, guard_check, guard_limits  # noqa: E402
from dualpatch.threshold import calibrate, holdout_split  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "online_guard.json"


def fit_models(train, seed: int, cache: str | None) -> tuple[DualPatchCore, PatchCore, list]:
    """The dual model (defaults) and a single-bank model on the same normal bank, each with a
    threshold from the same held-out normal images."""
    bank_images, held = holdout_split(train.normal(), 0.2, seed)
    dual = DualPatchCore(seed=seed, cache_dir=cache, progress=False)
    dual.fit(bank_images, train.defective())
    single = PatchCore(
        **{k: getattr(dual, k) for k in PatchCore.PARAMS}, cache_dir=cache, progress=False
    )
    single.memory_, single.grid_ = single._memory(single.coreset_ratio), dual.grid_
    single.memory_.bank_ = dual.memory_.bank_
    single.train_sha256_ = set(dual.train_sha256_)
    for model in (dual, single):
        calibrate(model, held)
    return dual, single, held


def recall(model, feats: torch.Tensor) -> tuple[float, np.ndarray]:
    """(recall at the stored threshold, scores) of precomputed defective-image features."""
    _, scores = model._score_features(feats)
    scores = scores.numpy()
    return float((scores > model.threshold_).mean()), scores


def trials(model, defects: list, feats: torch.Tensor, held: list) -> dict:
    """Each defective image added to the normal bank alone: guard verdict (``add_normal``'s, its
    limits from the held-out normals), recall after it is forced in."""
    bank, seen = model.memory_.bank_, set(model.train_sha256_)
    base, base_scores = recall(model, feats)
    limits = guard_limits(model, held_out=held)
    verdicts, _ = guard_check(model, feats, limits)
    rows = []
    for i, sample in enumerate(defects):
        model.add_normal([sample], force=True)  # the stored threshold kept: no held-out re-check
        after, scores = recall(model, feats)
        rows.append({
            "image": sample.id, "score_before": float(base_scores[i]),
            "flagged_before": bool(base_scores[i] > model.threshold_),
            "guard_caught": verdicts[i] is not None, "guard_reason": verdicts[i], "rows_added":
            int(model.memory_.bank_.shape[0] - bank.shape[0]), "recall_after": after,
            "flagged_after": bool(scores[i] > model.threshold_),
        })  # fmt: skip
        model.memory_.bank_, model.train_sha256_ = bank, set(seen)  # the next trial starts clean
    caught = [r["guard_caught"] for r in rows]
    missed = [r for r in rows if not r["guard_caught"]]
    return {
        "threshold": model.threshold_,
        "guard": limits,
        "recall_before": base,
        "caught": int(sum(caught)),
        "of": len(rows),
        "caught_among_flagged": int(sum(r["guard_caught"] for r in rows if r["flagged_before"])),
        "flagged_before": int(sum(r["flagged_before"] for r in rows)),
        "recall_after_forced": {
            "mean": float(np.mean([r["recall_after"] for r in rows])),
            "min": float(np.min([r["recall_after"] for r in rows])),
        },
        "recall_after_missed_by_guard": {
            "mean": float(np.mean([r["recall_after"] for r in missed])) if missed else None,
            "min": float(np.min([r["recall_after"] for r in missed])) if missed else None,
        },
        "trials": rows,
    }


def good_images(model, good_feats: torch.Tensor, held: list) -> dict:
    """The guard's cost: how many good test images it would refuse, and among them the false
    alarms (the images an operator would confirm as good)."""
    refused, scores = guard_check(model, good_feats, guard_limits(model, held_out=held))
    alarms = scores > model.threshold_
    return {
        "good_test_images": len(refused),
        "refused": sum(r is not None for r in refused),
        "false_alarms": int(alarms.sum()),
        "false_alarms_refused": sum(
            r is not None for r, a in zip(refused, alarms, strict=True) if a
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/kolektorsdd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    cache = default_cache()
    (split,) = make_splits("kolektorsdd", args.data, None, None, "drop")
    dual, single, held = fit_models(split.train, args.seed, str(cache) if cache else None)
    defects = split.test.defective()
    feats = dual.image_features(defects, None)
    good_feats = dual.image_features(split.test.normal(), None)
    result = {
        "command": f"python benchmarks/online_guard.py --data {args.data} --seed {args.seed}",
        "dataset": "kolektorsdd, default split (kos01-33 train), duplicates dropped from test",
        "guard_factor": GUARD_FACTOR,
        "held_out_normals": len(held),
        "defective_test_images": len(defects),
        "models": {
            f"dual-{dual.rule}": trials(dual, defects, feats, held),
            "single": trials(single, defects, feats, held),
        },
        "guard_on_good_images": {
            f"dual-{dual.rule}": good_images(dual, good_feats, held),
            "single": good_images(single, good_feats, held),
        },
        "seconds": round(time.time() - started, 1),
        "cpus": os.cpu_count(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {
        k: {m: v for m, v in r.items() if m != "trials"} for k, r in result["models"].items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
