"""A line that teaches the model: start from a single-bank model fitted on a fraction of the
normal training images and no defects, stream the test images in a seeded order, and after each
false alarm add the image to the normal bank (the guard may refuse it: counted, not forced), after
each found defect add it (with its mask, as an operator would mark it) to the defect bank (the
first one turns the model dual: ``online.start_defect_bank``). After each change the threshold is
re-checked on held-out normal training images (20 % of the starting fraction, never in a bank).

Reported: the false-alarm and escape rates over the stream, each image scored *before* it could
teach (prequential), against the same start model never learning; and one pass over the whole
stream at the end by the learned model and by a model refitted from scratch on what it learned
(the starting normals, the added normals, the found defects with their masks), each with its
threshold from the same held-out normals. That end pass scores images both models learned from,
so it compares the two, not either with an unseen set. Defaults everywhere; test labels only
play the operator and are counted.

    python benchmarks/online_line.py --dataset kolektorsdd --data ../shared/data/kolektorsdd
    python benchmarks/online_line.py --dataset folder --data ../shared/data/bsdata --name bsdata \
        --image-size 128 320
    python benchmarks/online_line.py --dataset folder --data ../shared/data/battery_weld/welding \
        --name battery_weld --image-size 160 256

Writes ``benchmarks/results/online_line_<name>.json``.
"""

from __future__ import annotations

import argparse
import copy
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
from dualpatch.errors import DataError  # noqa: E402
from dualpatch.experiment.protocol import make_splits  # noqa: E402
from dualpatch.models.online import start_defect_bank  # noqa: E402
from dualpatch.threshold import calibrate, holdout_split  # noqa: E402


def rates(flags: list[bool], labels: list[int]) -> dict:
    """False-alarm rate over good images, escape rate over defective ones, with the counts."""
    f, y = np.array(flags, bool), np.array(labels)
    good, bad = y == 0, y == 1
    return {
        "false_alarms": int((f & good).sum()), "good": int(good.sum()),
        "false_alarm_rate": float((f & good).sum() / max(1, good.sum())),
        "escapes": int((~f & bad).sum()), "defective": int(bad.sum()),
        "escape_rate": float((~f & bad).sum() / max(1, bad.sum())),
    }  # fmt: skip


def curve(flags: list[bool], labels: list[int], points: int = 10) -> list[dict]:
    """Rates over consecutive stretches of the stream (``points`` of them)."""
    edges = np.linspace(0, len(flags), points + 1).round().astype(int)
    return [
        {"from": int(a), "to": int(b), **rates(flags[a:b], labels[a:b])}
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]


def verdict(model, sample) -> tuple[bool, float]:
    score = float(model.predict([sample]).image_scores[0])
    return score > model.threshold_, score


def run_line(model, stream: list, held: list) -> tuple[object, dict]:
    """Stream ``stream`` through ``model``, teaching it; the learned model and the log."""
    log: dict = {"flags": [], "scores": [], "added_normal": [], "refused": [], "defects": []}
    for sample in stream:
        flagged, score = verdict(model, sample)
        log["flags"].append(flagged)
        log["scores"].append(score)
        if flagged and sample.label == 0:  # a false alarm: the operator says good
            try:
                model.add_normal([sample], held_out=held)
                log["added_normal"].append(sample)
            except DataError as exc:
                log["refused"].append({"image": sample.id, "reason": str(exc)})
        elif flagged and sample.label == 1:  # a found defect: the operator marks it
            try:
                if hasattr(model, "defect_memory_"):
                    model.add_defects([sample], held_out=held)
                else:
                    model, _ = start_defect_bank(model, [sample], held_out=held)
                log["defects"].append(sample)
            except DataError as exc:  # e.g. a mask with no patch at the model's size
                log["refused"].append({"image": sample.id, "reason": str(exc)})
    return model, log


def refit(start: list, log: dict, held: list, seed: int, cache: str | None, size: dict):
    normals = start + log["added_normal"]
    if log["defects"]:
        model = DualPatchCore(seed=seed, cache_dir=cache, progress=False, **size)
        model.fit(normals, log["defects"])
    else:
        model = PatchCore(seed=seed, cache_dir=cache, progress=False, **size).fit(normals)
    calibrate(model, held)
    return model


def end_pass(model, stream: list) -> dict:
    scores = model.predict(stream).image_scores
    return rates(list(scores > model.threshold_), [s.label for s in stream])


def bank_rows(model) -> list[int]:
    """[normal bank rows, defect bank rows (0 for a single-bank model)]."""
    defect = getattr(model, "defect_memory_", None)
    return [model.memory_.bank_.shape[0], defect.bank_.shape[0] if defect is not None else 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="kolektorsdd")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/kolektorsdd")
    parser.add_argument(
        "--name", default=None, help="Dataset name in the output (default: --dataset)."
    )
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="Model input size (default: the estimators'); keep the aspect.",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (default: results).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    name = args.name or args.dataset
    torch.set_num_threads(1)
    started = time.time()
    cache = str(default_cache()) if default_cache() else None
    (split,) = make_splits(args.dataset, args.data, None, None, "drop")
    rng = np.random.default_rng(args.seed)
    normal = split.train.normal()
    chosen = sorted(rng.permutation(len(normal))[: max(2, round(args.fraction * len(normal)))])
    start, held = holdout_split([normal[i] for i in chosen], 0.2, args.seed)
    test = list(split.test)
    stream = [test[i] for i in rng.permutation(len(test))]
    labels = [s.label for s in stream]

    size = {"image_size": tuple(args.image_size)} if args.image_size else {}
    static = PatchCore(seed=args.seed, cache_dir=cache, progress=False, **size).fit(start)
    calibrate(static, held)
    static_scores = static.predict(stream).image_scores
    static_flags = list(static_scores > static.threshold_)
    learned, log = run_line(copy.deepcopy(static), stream, held)
    refitted = refit(start, log, held, args.seed, cache, size)
    result = {
        "command": f"python benchmarks/online_line.py --dataset {args.dataset} --data {args.data}"
        f" --name {name} --fraction {args.fraction} --seed {args.seed}"
        + (f" --image-size {args.image_size[0]} {args.image_size[1]}" if args.image_size else ""),
        "dataset": name,
        "start_normals": len(start), "held_out_normals": len(held), "stream": len(stream),
        "added_normal": len(log["added_normal"]), "refused_by_guard": log["refused"],
        "defects_added": len(log["defects"]),
        "prequential": {
            "learning": rates(log["flags"], labels), "never_learns": rates(static_flags, labels),
        },
        "curve": {
            "learning": curve(log["flags"], labels), "never_learns": curve(static_flags, labels),
        },
        "end_pass": {
            "never_learns": rates(static_flags, labels), "learned": end_pass(learned, stream),
            "refitted": end_pass(refitted, stream),
        },
        "thresholds": {"never_learns": static.threshold_, "learned": learned.threshold_,
                       "refitted": refitted.threshold_},
        "bank_rows": {"learned": bank_rows(learned), "refitted": bank_rows(refitted)},
        "seconds": round(time.time() - started, 1),
        "cpus": os.cpu_count(),
    }  # fmt: skip
    out = args.out or ROOT / "benchmarks" / "results" / f"online_line_{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("prequential", "end_pass", "added_normal",
                                             "defects_added")}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
