"""A line that teaches the model: start from a single-bank model fitted on a fraction of the
normal training images and no defects, stream the test images in a seeded order, and after each
false alarm add the image to the normal bank (the guard may refuse it: counted, not forced), after
each found defect add it (with its mask, as an operator would mark it) to the defect bank (the
first one turns the model dual: ``online.start_defect_bank``). After each change the threshold is
re-checked on held-out normal training images (20 % of the starting fraction, never in a bank).

Repeated: ``--fold-seeds`` repeats of ``--folds`` group-aware stratified folds of every image
(the stream is the fold's test images, the start model's normals come from its training images)
x ``--seeds`` (each seed draws the starting fraction, the held-out normals and the stream
order). Each fold's runs are pooled (counts), and the fold-level means get Nadeau-Bengio corrected
intervals (folds share training data; test share 1/(folds-1)); the paired differences the same
way.

Reported: the false-alarm and escape rates over the stream, each image scored *before* it could
teach (prequential), against the same start model never learning, overall and per stretch of the
stream (the curve); and one pass over the whole stream at the end by the learned model and by a
model refitted from scratch on what it learned (the starting normals, the added normals, the found
defects with their masks), each with its threshold from the same held-out normals. That end pass
scores images both models learned from, so it compares the two, not either with an unseen set.
Defaults everywhere but the normal bank's coreset (``--coreset``, 1 %: CPU); test labels only
play the operator and are counted.

    python benchmarks/online_line.py --dataset kolektorsdd --data ../shared/data/kolektorsdd
    python benchmarks/online_line.py --dataset folder --data ../shared/data/bsdata --name bsdata \
        --image-size 128 320
    python benchmarks/online_line.py --dataset folder --data ../shared/data/battery_weld/welding \
        --name battery_weld --image-size 160 256 --fraction 0.5
    python benchmarks/online_line.py --plot \
        benchmarks/results/online_line_{kolektorsdd,bsdata,battery_weld}.json

Writes ``benchmarks/results/online_line_<name>.json``; ``--plot`` draws ``docs/online_line.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import subprocess
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
from dualpatch.metrics.uncertainty import corrected_paired_test, corrected_t_interval  # noqa: E402
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


def refit(start: list, log: dict, held: list, seed: int, cache: str | None, params: dict):
    normals = start + log["added_normal"]
    if log["defects"]:
        model = DualPatchCore(seed=seed, cache_dir=cache, progress=False, **params)
        model.fit(normals, log["defects"])
    else:
        model = PatchCore(seed=seed, cache_dir=cache, progress=False, **params).fit(normals)
    calibrate(model, held)
    return model


def end_pass(model, stream: list) -> dict:
    scores = model.predict(stream).image_scores
    return rates(list(scores > model.threshold_), [s.label for s in stream])


def bank_rows(model) -> list[int]:
    """[normal bank rows, defect bank rows (0 for a single-bank model)]."""
    defect = getattr(model, "defect_memory_", None)
    return [model.memory_.bank_.shape[0], defect.bank_.shape[0] if defect is not None else 0]


def one_line(split, seed: int, fraction: float, cache: str | None, params: dict) -> dict:
    """One simulated line on one split: the start model fitted on a seeded ``fraction`` of the
    training normals (20 % of those held out), the split's test images streamed in a seeded
    order; the run's rates, curves and end pass."""
    rng = np.random.default_rng(seed)
    normal = split.train.normal()
    chosen = sorted(rng.permutation(len(normal))[: max(2, round(fraction * len(normal)))])
    start, held = holdout_split([normal[i] for i in chosen], 0.2, seed)
    test = list(split.test)
    stream = [test[i] for i in rng.permutation(len(test))]
    labels = [s.label for s in stream]
    static = PatchCore(seed=seed, cache_dir=cache, progress=False, **params).fit(start)
    calibrate(static, held)
    static_flags = list(static.predict(stream).image_scores > static.threshold_)
    learned, log = run_line(copy.deepcopy(static), stream, held)
    refitted = refit(start, log, held, seed, cache, params)
    return {
        "split": split.name, "seed": seed, "start_normals": len(start),
        "held_out_normals": len(held), "stream": len(stream), "labels": labels,
        "added_normal": len(log["added_normal"]), "refused_by_guard": log["refused"],
        "defects_added": len(log["defects"]),
        "flags": {"learning": [bool(f) for f in log["flags"]],
                  "never_learns": [bool(f) for f in static_flags]},
        "prequential": {
            "learning": rates(log["flags"], labels), "never_learns": rates(static_flags, labels),
        },
        "end_pass": {
            "never_learns": rates(static_flags, labels), "learned": end_pass(learned, stream),
            "refitted": end_pass(refitted, stream),
        },
        "thresholds": {"never_learns": static.threshold_, "learned": learned.threshold_,
                       "refitted": refitted.threshold_},
        "bank_rows": {"learned": bank_rows(learned), "refitted": bank_rows(refitted)},
    }  # fmt: skip


def pooled_rate(runs: list[dict], pick, kind: str) -> float:
    """One fold's rate over its runs (stream seeds): pooled counts, so a run with no defective
    image in a stretch does not count as a rate of 0. NaN when nothing was counted."""
    num, den = ("false_alarms", "good") if kind == "false_alarm_rate" else ("escapes", "defective")
    rows = [pick(r) for r in runs]
    total = sum(r[den] for r in rows)
    return sum(r[num] for r in rows) / total if total else math.nan


def by_fold(runs: list[dict]) -> list[list[dict]]:
    return [
        [r for r in runs if r["split"] == name] for name in dict.fromkeys(r["split"] for r in runs)
    ]


def stretch(run: dict, who: str, k: int, points: int) -> dict:
    """The rates of ``who``'s flags in stretch ``k`` of ``points`` equal parts of the stream."""
    edges = np.linspace(0, run["stream"], points + 1).round().astype(int)
    a, b = edges[k], edges[k + 1]
    return rates(run["flags"][who][a:b], run["labels"][a:b])


def summary(runs: list[dict], test_share: float, points: int) -> dict:
    """Fold-level means and Nadeau-Bengio intervals (each fold's runs pooled first): the
    prequential rates, the end pass, each stretch of the stream, and the paired differences."""
    folds = by_fold(runs)
    kinds = ("false_alarm_rate", "escape_rate")

    def per_fold(pick, kind):
        return [pooled_rate(f, pick, kind) for f in folds]

    def interval(pick) -> dict:
        return {k: corrected_t_interval(per_fold(pick, k), test_share) for k in kinds}

    def paired(pa, pb, names) -> dict:
        return {k: corrected_paired_test(per_fold(pa, k), per_fold(pb, k), test_share, names)
                for k in kinds}  # fmt: skip

    pre = {w: interval(lambda r, w=w: r["prequential"][w]) for w in ("learning", "never_learns")}
    end = {w: interval(lambda r, w=w: r["end_pass"][w])
           for w in ("never_learns", "learned", "refitted")}  # fmt: skip
    curve_out = {
        who: [interval(lambda r, k=k, who=who: stretch(r, who, k, points)) for k in range(points)]
        for who in ("learning", "never_learns")
    }
    return {
        "prequential": pre,
        "end_pass": end,
        "curve": curve_out,
        "curve_stretches": points,
        "learning_minus_never_learns_prequential": paired(
            lambda r: r["prequential"]["learning"],
            lambda r: r["prequential"]["never_learns"],
            ("never-learns", "learning"),
        ),
        "learned_minus_refitted_end_pass": paired(
            lambda r: r["end_pass"]["learned"],
            lambda r: r["end_pass"]["refitted"],
            ("refitted", "learned"),
        ),
        "learned_minus_never_learns_end_pass": paired(
            lambda r: r["end_pass"]["learned"],
            lambda r: r["end_pass"]["never_learns"],
            ("never-learns", "learned"),
        ),
    }


def run_info() -> dict:
    """Git commit and load average: what a reader needs to weigh the figures."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    return {"git_commit": commit, "load_average": list(os.getloadavg()), "cpus": os.cpu_count()}


def stretch_differences(runs: list[dict], test_share: float, points: int) -> list[dict]:
    """Per stretch of the stream: escape rate, learning minus never learns, paired by fold
    (Nadeau-Bengio)."""
    folds = by_fold(runs)

    def rate(who: str, k: int) -> list[float]:
        return [pooled_rate(f, lambda r: stretch(r, who, k, points), "escape_rate") for f in folds]

    return [
        corrected_paired_test(rate("learning", k), rate("never_learns", k), test_share)
        for k in range(points)
    ]


def _band(ax, x, pts: list[dict], colour: str, label: str, key: str = "mean") -> None:
    """A line of means and its interval as a shaded band."""
    lo, hi = (np.array([p["ci"][i] for p in pts]) for i in (0, 1))
    ax.plot(x, [p[key] for p in pts], "o-", color=colour, label=label, ms=3)
    ax.fill_between(x, lo, hi, color=colour, alpha=0.15)


def _draw_dataset(axes, d: dict) -> None:
    """One column: false-alarm rate, escape rate (learning, never learns, the refit's end pass),
    and the paired escape-rate difference, over the stream."""
    s, points = d["summary"], d["summary"]["curve_stretches"]
    x = (np.arange(points) + 0.5) / points
    for ax, kind in zip(axes[:2], ("false_alarm_rate", "escape_rate"), strict=True):
        for who, colour in (("never_learns", "tab:grey"), ("learning", "tab:blue")):
            _band(ax, x, [c[kind] for c in s["curve"][who]], colour, who.replace("_", " "))
        refit = s["end_pass"]["refitted"][kind]["mean"]
        ax.axhline(refit, color="tab:green", ls="--", lw=1, label="refitted (end pass)")
        ax.set_ylim(0, 1 if kind == "escape_rate" else 0.6)
    folds = int(re.search(r"--folds (\d+)", d["command"]).group(1))
    diff = stretch_differences(d["runs"], 1.0 / (folds - 1), points)
    _band(axes[2], x, diff, "tab:red", "learning - never learns", "difference")
    axes[2].axhline(0, color="black", lw=0.8)
    axes[0].set_title(d["dataset"], fontsize=9)


def plot(results: list[Path], out: Path) -> None:
    """``out``: a column per dataset (``_draw_dataset``); fold-level means, 95 % intervals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = [json.loads(p.read_text()) for p in results]
    fig = Figure(figsize=(3.2 * len(data), 6.6))
    axes = fig.subplots(3, len(data), squeeze=False, sharex=True)
    for col, d in enumerate(data):
        _draw_dataset(axes[:, col], d)
    labels = ("false-alarm rate", "escape rate", "escape rate:\nlearning - never learns")
    for ax, label in zip(axes[:, 0], labels, strict=True):
        ax.set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("position in the stream", fontsize=8)
    axes[1][0].legend(fontsize=6)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=110)


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
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1],
                        help="Repeats of the K-fold split (repeated K-fold).")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="Stream seeds.")
    parser.add_argument("--coreset", type=float, default=0.01, help="Normal bank coreset ratio.")
    parser.add_argument("--points", type=int, default=5, help="Stretches of the stream curve.")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (default: results).")
    parser.add_argument(
        "--plot",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="Only draw docs/online_line.png from these result files.",
    )
    args = parser.parse_args()  # fmt: skip
    if args.plot:
        plot(args.plot, ROOT / "docs" / "online_line.png")
        return
    name = args.name or args.dataset
    torch.set_num_threads(1)
    started, info = time.time(), run_info()
    cache = str(default_cache()) if default_cache() else None
    params: dict = {"coreset_ratio": args.coreset}
    if args.image_size:
        params["image_size"] = tuple(args.image_size)
    runs = []
    for fold_seed in args.fold_seeds:
        for sp in make_splits(args.dataset, args.data, args.folds, None, "drop", fold_seed):
            sp.name = f"r{fold_seed}{sp.name}"  # one name per fold of each repeat
            runs += [one_line(sp, seed, args.fraction, cache, params) for seed in args.seeds]
    result = {
        "command": f"python benchmarks/online_line.py --dataset {args.dataset} --data {args.data}"
        f" --name {name} --fraction {args.fraction} --folds {args.folds} --fold-seeds "
        f"{' '.join(map(str, args.fold_seeds))} --seeds {' '.join(map(str, args.seeds))}"
        f" --coreset {args.coreset} --points {args.points}"
        + (f" --image-size {args.image_size[0]} {args.image_size[1]}" if args.image_size else ""),
        "dataset": name,
        "design": f"{len(args.fold_seeds)} x {args.folds} group-aware stratified folds (repeated "
        f"K-fold) x {len(args.seeds)} stream seeds; "
        "each fold's runs pooled, then a Nadeau-Bengio interval over folds "
        "(test share 1/(folds-1))",
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
        "summary": summary(runs, 1.0 / (args.folds - 1), args.points),
        "runs": runs,
        "seconds": round(time.time() - started, 1),
        **info,
        "load_average_end": list(os.getloadavg()),
    }  # fmt: skip
    out = args.out or ROOT / "benchmarks" / "results" / f"online_line_{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result["summary"][k]
                for k in (
                    "learning_minus_never_learns_prequential",
                    "learned_minus_refitted_end_pass",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
