"""Safety suite: one JSON per dataset (``benchmarks/results/safety_<dataset>.json``).

For KolektorSDD, battery_weld and BSData, under repeated group-aware 3-fold cross-validation
(``safety_compute.FOLD_SEEDS`` fold seeds), for the single bank (plain and re-weighted), every
dual rule and the nested choice (``select_defaults.py``: each outer fold's own train-only choice):

* image AUROC, image AP and pixel AUPRO with a fold-level interval (Nadeau-Bengio corrected
  resampled t over the outer folds) and, second and labelled, an image bootstrap interval;
* foreign-frame recall at the stored threshold: black, white, grey, noise, blur, rot90 frames
  and the other two datasets' images;
* unseen-defect recall at the stored threshold and AUROC (pasted copies of this dataset's normal
  test images, carrying another dataset's defect, against the same normal images);
* paired fold-level differences against both single banks; a "win" needs the interval to
  exclude 0.

The stored threshold is what ``threshold.calibrate`` sets on a fit with 20 % of the normal
training images held out (quantile 1.0 of their scores; capped at the novelty level tau under a
rule that keeps the scoring contract; tau = the largest held-out patch distance to the normal
bank). It is reproduced here from the stored distances of the held-out images.

    python benchmarks/safety_compute.py --work runs/safety        # the fits (hours of CPU)
    python benchmarks/safety_compute.py --work runs/safety --defaults
    python benchmarks/safety_suite.py --work runs/safety          # these JSON files (minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import safety_compute as compute
import torch
from safety_data import DATASETS, pooled_samples
from select_defaults import (
    CRITERION,
    NORMALIZATIONS,
    UNSEEN,
    UNSEEN_WITH_AUROC,
    choose,
    choose_defaults,
    nested_choices,
)

RESULTS = Path(__file__).parent / "results"
SINGLE = ("single", "single-reweighted")
DEFAULT_NORM = "auto"
COMPARED = ("image_auroc", "image_ap", "pixel_aupro", "unseen_auroc", "unseen_recall")
BOOTSTRAP = 1000
#: how a verdict names a run ("chosen" is each outer fold's own nested choice)
LABELS = {"chosen": "the procedure"}
#: every run has the image-level check (``bank.coverage``), as the library's models do by default;
#: a run named with this suffix is scored without it, to show what the check changes
NO_CHECK = "-no-image-check"
UNCHECKED_RUNS = ("single" + NO_CHECK, "guarded" + NO_CHECK)


def _scoring_digest() -> str:
    """The scoring code's digest (rules, the image-level check and this file's use of them): a
    metrics memo made by other code is measured again."""
    import hashlib

    import dualpatch.bank.coverage
    import dualpatch.scoring

    parts = (dualpatch.scoring.__file__, dualpatch.bank.coverage.__file__, __file__)
    return hashlib.sha256(b"".join(Path(p).read_bytes() for p in parts)).hexdigest()[:16]


SCORING_DIGEST = _scoring_digest()


def dual_rules() -> dict:
    from dualpatch.scoring import DUAL_RULES

    return DUAL_RULES


def eligible_rules() -> list[str]:
    """The default-eligible dual rules: those that keep the scoring contract."""
    return [name for name, r in dual_rules().items() if getattr(r, "safe", False)]


class Fold:
    """One stored fit: per-patch distances of its held-out normals and of each scored set, and
    their missing content (``safety_gate.py``, ``<fit>.gate.npz``)."""

    def __init__(self, path: Path):
        self.path = path
        self.arrays = dict(np.load(path))
        self.meta = json.loads(path.with_suffix(".json").read_text())
        dn = self.arrays["held.dn"].reshape(len(self.arrays["held.dn"]), -1)
        #: tau as ``threshold.calibrate`` sets it: the largest held-out patch distance
        self.level = float(dn.max(1).max())
        gate = path.with_suffix(".gate.npz")
        self.missing = dict(np.load(gate)) if gate.exists() else None

    def ids(self, part: str) -> list[str]:
        return self.meta["sets"][part]

    def scores(self, run: str, part: str, maps_size=None):
        """(image scores, anomaly maps at ``maps_size`` or None) of ``run`` on set ``part``: the
        rule's scores with the image-level check folded in as ``threshold.calibrate`` maps it
        (the held-out normals' largest missing content to their largest score, capped at tau
        under a safe rule), unless ``run`` ends in ``NO_CHECK``."""
        base = run.removesuffix(NO_CHECK)
        score, amap = self._rule_scores(base, part, maps_size)
        if run.endswith(NO_CHECK):
            return score, amap
        if self.missing is None:
            raise SystemExit(f"{self.path}: no image-level check stored (run safety_gate.py)")
        held, _ = self._rule_scores(base, "held")
        scale = float(np.max(held))
        if self._safe(base):
            scale = min(scale, self.level)
        from dualpatch.scoring import gated_scores

        left_out = self.missing["bank.leave_image_out"]
        level = max(float(np.max(self.missing["held.miss"])), float(np.max(left_out, initial=0)))
        missing = torch.from_numpy(self.missing[f"{part}.miss"])
        gated = gated_scores(torch.from_numpy(np.asarray(score, np.float64)), missing, level, scale)
        return gated.numpy(), amap

    @staticmethod
    def _safe(run: str) -> bool:
        return run not in SINGLE and getattr(dual_rules()[run], "safe", False)

    def _rule_scores(self, run: str, part: str, maps_size=None):
        from dualpatch.scoring import score_patches

        dn = torch.from_numpy(self.arrays[f"{part}.dn"])
        dd = torch.from_numpy(self.arrays[f"{part}.dd"])
        if run in SINGLE:
            score = dn.flatten(1).amax(1) if run == "single" else self.arrays[f"{part}.rw"]
            amap = None
            if maps_size is not None:
                amap, _ = score_patches(dn, maps_size, 4.0)
            return np.asarray(score, dtype=np.float64), _np(amap)
        size = maps_size or (dn.shape[1], dn.shape[2])
        amap, score = score_patches(dn, size, 4.0, dd, run, 1e-6, novelty_level=self.level)
        return score.double().numpy(), _np(amap) if maps_size is not None else None

    def threshold(self, run: str) -> float:
        held, _ = self.scores(run, "held")
        t = float(np.max(held))
        if self._safe(run.removesuffix(NO_CHECK)):
            t = min(t, self.level)
        return t


def _np(t):
    return None if t is None else t.numpy()


def metrics_of(fold: Fold, run: str, masks: np.ndarray | None, size) -> dict:
    """Every figure of ``run`` on one stored fit (its test or validation set)."""
    from dualpatch.metrics.evaluation import aupro, evaluate
    from dualpatch.threshold import flag

    labels = fold.arrays["test.label"]
    scores, maps = fold.scores(run, "test", size if masks is not None else None)
    m = evaluate(labels, scores)
    out = {k: m[k] for k in ("image_auroc", "image_ap")}
    out["pixel_aupro"] = aupro(masks, maps) if masks is not None else math.nan
    thr = fold.threshold(run)
    # the verdict as predict and serve give it (threshold.flag: a score above the threshold)
    flagged = flag(scores, thr)
    out["threshold"] = thr
    out["recall_at_threshold"] = float(flagged[labels == 1].mean())
    out["false_alarm_rate"] = float(flagged[labels == 0].mean())
    foreign, _ = fold.scores(run, "foreign")
    foreign_flagged = flag(foreign, thr)
    out["foreign_recall"] = float(foreign_flagged.mean())
    out["foreign_missed"] = [i for i, f in zip(fold.ids("foreign"), foreign_flagged, strict=True)
                             if not f]  # fmt: skip
    unseen, _ = fold.scores(run, "unseen")
    out["unseen_recall"] = float(flag(unseen, thr).mean())
    normal = scores[labels == 0]
    both = np.r_[np.ones(len(unseen)), np.zeros(len(normal))]
    out["unseen_auroc"] = evaluate(both, np.r_[unseen, normal])["image_auroc"]
    return out


class Store:
    """The stored fits of one dataset, their masks and metrics, each computed once."""

    def __init__(self, work: Path, name: str):
        self.work, self.name = work, name
        self.size = tuple(DATASETS[name]["size"])
        self.by_id = {s.id: s for s in pooled_samples(name)}
        self._metrics: dict = {}
        self._masks: dict = {}

    def path(self, norm: str, tag: str, level: str) -> Path:
        return self.work / self.name / norm / f"{tag}.{level}.npz"

    def has(self, norm: str, tag: str, level: str) -> bool:
        return self.path(norm, tag, level).exists()

    def fold(self, norm: str, tag: str, level: str) -> Fold:
        return Fold(self.path(norm, tag, level))

    def metrics(self, norm: str, tag: str, level: str, run: str) -> dict:
        """``metrics_of``, kept beside the stored fit (keyed by the scoring code's digest, so a
        changed rule is measured again)."""
        key = (norm, tag, level, run)
        if key in self._metrics:
            return self._metrics[key]
        memo = self.path(norm, tag, level).with_suffix(f".{run}.metrics.json")
        if memo.exists() and json.loads(memo.read_text()).get("scoring") == SCORING_DIGEST:
            self._metrics[key] = json.loads(memo.read_text())["metrics"]
            return self._metrics[key]
        fold = self.fold(norm, tag, level)
        ids = tuple(fold.ids("test"))
        if ids not in self._masks:
            self._masks[ids] = np.stack([self.by_id[i].mask(self.size) for i in ids])
        self._metrics[key] = metrics_of(fold, run, self._masks[ids], self.size)
        memo.write_text(json.dumps({"scoring": SCORING_DIGEST, "metrics": self._metrics[key]}))
        return self._metrics[key]

    def candidate_rows(self, tag: str, level: str, ids: list[str] | None = None) -> list[dict]:
        """The selection's rows on one validation set (each eligible rule x normalisation)."""
        rows = []
        for norm in NORMALIZATIONS:
            if ids is not None and self.fold(norm, tag, level).ids("test") != ids:
                raise RuntimeError(f"{self.name} {tag}: stored validation set is not the split's")
            single = self.metrics(norm, tag, level, "single")
            for rule in eligible_rules():
                rows.append({"candidate": {"rule": rule, "normalization": norm},
                             "metrics": _brief(self.metrics(norm, tag, level, rule)),
                             "single": _brief(single)})  # fmt: skip
        return rows


def _brief(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "foreign_missed"}


def test_share(work: Path, name: str, tag: str) -> float:
    split = json.loads((work / name / f"{tag}.split.json").read_text())
    return len(split["test"]) / len(split["train"])


def fold_summary(values: list[float], share: float) -> dict:
    from dualpatch.metrics.uncertainty import corrected_t_interval

    t = corrected_t_interval(values, share)
    return {"mean": t["mean"], "fold_ci": t["ci"], "per_fold": values, "n_folds": t["n_folds"]}


def image_bootstrap(store: Store, norm_of: dict, run_of: dict, tags: list[str]) -> dict:
    """Second figure: image AUROC/AP intervals from resampling test images inside each fold's
    fixed training set (blind to training-set variation), averaged over the folds."""
    from dualpatch.metrics.uncertainty import fold_counts, image_metrics

    folds = [store.fold(norm_of[t], t, "outer") for t in tags]
    counts = fold_counts([len(f.arrays["test.label"]) for f in folds], BOOTSTRAP, seed=0)
    reps: dict[str, list] = {"image_auroc": [], "image_ap": []}
    for f, c, t in zip(folds, counts, tags, strict=True):
        scores, _ = f.scores(run_of[t], "test")
        m = image_metrics(f.arrays["test.label"], scores, c)
        for k in reps:
            reps[k].append(m[k])
    out = {}
    for k, v in reps.items():
        lo, hi = np.nanpercentile(np.nanmean(np.stack(v), axis=0), [2.5, 97.5])
        out[k] = [float(lo), float(hi)]
    return out


def dataset_result(work: Path, name: str, unseen: Sequence[str] = UNSEEN) -> dict:
    from dualpatch.metrics.uncertainty import corrected_paired_test

    store = Store(work, name)
    samples = list(store.by_id.values())
    tags = [f"r{s}f{f}" for s in compute.FOLD_SEEDS for f in range(3)]
    done = [t for t in tags if store.has(DEFAULT_NORM, t, "outer")]
    share = float(np.mean([test_share(work, name, t) for t in done])) if done else math.nan
    runs = [*SINGLE, *dual_rules(), *UNCHECKED_RUNS]
    table: dict[str, dict] = {}
    per_fold: dict[str, dict[str, list]] = {}
    for run in runs:
        rows = [store.metrics(DEFAULT_NORM, t, "outer", run) for t in done]
        per_fold[run] = {k: [r[k] for r in rows] for k in rows[0] if k != "foreign_missed"}
        table[run] = _summary(per_fold[run], share, rows)
        table[run]["normalization"] = DEFAULT_NORM
        table[run]["image_bootstrap_ci"] = image_bootstrap(
            store, dict.fromkeys(done, DEFAULT_NORM), dict.fromkeys(done, run), done
        )
    # the procedure: each outer fold's own train-only choice, scored on that fold's test items
    choices = _procedure(store, samples, tags, unseen)
    ready = [c for c in choices if c.get("complete")]
    if ready:
        chosen_rows = [store.metrics(c["chosen"]["normalization"], c["fold"], "outer",
                                     c["chosen"]["rule"]) for c in ready]  # fmt: skip
        per_fold["chosen"] = {k: [r[k] for r in chosen_rows] for k in chosen_rows[0]
                              if k != "foreign_missed"}  # fmt: skip
        table["chosen"] = _summary(per_fold["chosen"], share, chosen_rows)
        table["chosen"]["image_bootstrap_ci"] = image_bootstrap(
            store,
            {c["fold"]: c["chosen"]["normalization"] for c in ready},
            {c["fold"]: c["chosen"]["rule"] for c in ready},
            [c["fold"] for c in ready],
        )
    comparisons = {}
    for run in [r for r in table if r not in SINGLE and not r.endswith(NO_CHECK)]:
        folds_run = done if run != "chosen" else [c["fold"] for c in ready]
        comparisons[run] = {}
        for base in SINGLE:
            base_vals = {t: store.metrics(DEFAULT_NORM, t, "outer", base) for t in folds_run}
            comparisons[run][base] = {
                k: corrected_paired_test(
                    per_fold[run][k],
                    [base_vals[t][k] for t in folds_run],
                    share,
                    (LABELS.get(run, run), base),
                )
                for k in COMPARED
            }
    return {
        "dataset": name,
        "model_size": list(store.size),
        "outer_folds": done,
        "test_share": share,
        "runs": table,
        "choices_per_outer_fold": [
            {"fold": c["fold"], "complete": c.get("complete", False), "chosen": c.get("chosen")}
            for c in choices
        ],
        "selection_candidates": [{"fold": c["fold"], "candidates": c["candidates"]} for c in ready],
        "comparisons": comparisons,
        "compute": _compute_record(work, name),
    }


def _procedure(
    store: Store, samples: list, tags: list[str], unseen: Sequence[str] = UNSEEN
) -> list[dict]:
    out = []
    for seed in compute.FOLD_SEEDS:

        def evaluate(name, seed, f, inner, validation):
            tag = f"r{seed}f{f}"
            return store.candidate_rows(tag, "inner", [s.id for s in validation])

        def ready(f, seed=seed):
            tag = f"r{seed}f{f}"
            return all(store.has(n, tag, "inner") for n in NORMALIZATIONS)

        if not all(ready(f) for f in range(3)):
            out += [{"fold": f"r{seed}f{f}", "complete": False} for f in range(3)]
            continue
        for c in nested_choices(store.name, samples, seed, evaluate, unseen):
            c["complete"] = store.has(c["chosen"]["normalization"], c["fold"], "outer")
            if c["chosen"]["rule"] == "single":
                c["chosen"]["rule"] = "single"
            out.append(c)
    return out


def _summary(per_fold: dict[str, list], share: float, rows: list[dict]) -> dict:
    out = {k: fold_summary(v, share) for k, v in per_fold.items() if k != "threshold"}
    missed = sorted({i for r in rows for i in r["foreign_missed"]})
    out["foreign_missed"] = missed
    return out


def _compute_record(work: Path, name: str) -> dict:
    """The fitting processes' own records (and ``safety_gate.py``'s): command, wall time, load
    average before and after."""
    found = sorted((work / name).glob("compute_run*")) + sorted((work / name).glob("gate_run*"))
    return {p.stem: json.loads(p.read_text()) for p in found}


def defaults_result(work: Path, unseen: Sequence[str] = UNSEEN) -> dict:
    """The defaults: the same procedure on all images of each of the three datasets."""
    rows = {}
    for name in DATASETS:
        store = Store(work, name)
        if all(store.has(n, "all", "inner") for n in NORMALIZATIONS):
            rows[name] = store.candidate_rows("all", "inner")
    out = {"datasets": list(rows),
           "per_dataset_choice": {n: choose(r, unseen) for n, r in rows.items()}}  # fmt: skip
    if rows:
        out.update(choose_defaults(rows, unseen))
    out["rows"] = rows
    return out


def stored_fits_args(description: str) -> argparse.Namespace:
    """The options of the scripts that read the suite's stored fits: datasets and work folder."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--work", default="runs/safety")
    return parser.parse_args()


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/safety")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--defaults", action="store_true", help="Also write select_defaults.json.")
    parser.add_argument(
        "--unseen-auroc-constraint",
        action="store_true",
        help="the counterfactual selection that also requires unseen-defect AUROC at least the "
        "single bank's; its files end in _unseen_auroc_constraint.json (the published ones stay)",
    )
    args = parser.parse_args()
    from dualpatch.fileio import write_json

    work = Path(args.work)
    unseen = UNSEEN_WITH_AUROC if args.unseen_auroc_constraint else UNSEEN
    suffix = "_unseen_auroc_constraint" if args.unseen_auroc_constraint else ""
    protocol = {
        "folds": "3 group-aware stratified outer folds x fold seeds "
        f"{list(compute.FOLD_SEEDS)} (KolektorSDD items, BSData spindle locations, weld images)",
        "selection": "per outer fold, on its training items only: inner 2/3 - 1/3 split; "
        "candidates = default-eligible rules x normalisation; constraints foreign recall = 1 and "
        + " and ".join(k.replace("_", " ") for k in unseen)
        + " >= single; criterion mean of "
        + ", ".join(CRITERION),
        "threshold": "20 % of the training normals held out of the bank; quantile 1.0 of their "
        "scores, capped at the novelty level tau under a contract-keeping rule",
        "image_level_check": "every run but those named '" + NO_CHECK + "': missing content "
        "(dualpatch.bank.coverage: 16 k-center patches per bank image) folded into the image "
        "score beyond its level, the largest over the held-out images and 32 bank images left "
        "out, mapped to the held-out largest score (capped at tau under a contract-keeping "
        "rule), as threshold.calibrate does",
        "banks": {
            "normal_coreset": compute.NORMAL_CORESET,
            "defect_coreset": compute.DEFECT_CORESET,
            "coreset_rows": compute.CORESET_ROWS,
            "note": "the library's defaults (10 % coresets, at most coreset_rows rows a bank); "
            "not searched",
        },
        "cuts": {
            "coreset_method": compute.CORESET_METHOD,
            "defect_source": "image (mask patches of whole training images); crop not searched",
            "fold_seeds": len(compute.FOLD_SEEDS),
            "inner_splits": "one inner split per outer fold",
        },
        "fixed_runs_normalization": DEFAULT_NORM,
    }
    for name in args.datasets:
        t0, load0 = time.perf_counter(), os.getloadavg()
        result = dataset_result(work, name, unseen)
        result = {
            "command": "python " + " ".join(sys.argv),
            "git_commit": git_commit(),
            "protocol": protocol,
            **result,
            "summary_wall_seconds": round(time.perf_counter() - t0, 1),
            "summary_loadavg_before": load0,
            "summary_loadavg_after": os.getloadavg(),
        }
        out = RESULTS / f"safety_{name}{suffix}.json"
        write_json(out, result)
        print(f"wrote {out}", flush=True)
    if args.defaults:
        out = RESULTS / f"select_defaults{suffix}.json"
        write_json(out, {"command": "python " + " ".join(sys.argv), "git_commit": git_commit(),
                         "protocol": protocol, **defaults_result(work, unseen)})  # fmt: skip
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
