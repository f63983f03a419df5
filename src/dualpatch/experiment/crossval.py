"""Runs an experiment over splits (the dataset's own, or K folds) × seeds and summarises it.

Every run is fitted and scored once per fold × seed through ``Experiment.run_one`` (the public
fit/predict path). Metrics are reported as mean ± std over folds × seeds with a 95% bootstrap
interval (``metrics.uncertainty``); each run's bootstrap replicates are saved, so two runs, or
two results folders on the same folds, can be compared pair-wise (``compare_runs``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dualpatch import events
from dualpatch.data.duplicates import DuplicateReport, find_duplicates
from dualpatch.experiment.protocol import Split, make_splits, seeds_of
from dualpatch.metrics.uncertainty import (
    BOOTSTRAP_METRICS,
    compare,
    fold_counts,
    image_metrics,
    pixel_histograms,
    pixel_metrics,
    summarise,
)

#: metrics compared between runs in metrics.json / the report
COMPARED = ("image_auroc", "image_ap", "pixel_aupro")


def split_info(split: Split) -> dict[str, Any]:
    return {
        "name": split.name,
        "train": {"sha256": split.train.fingerprint(), "images": len(split.train)},
        "test": {"sha256": split.test.fingerprint(), "images": len(split.test)},
        "train_items": split.train_items,
        "test_ids": [s.id for s in split.test],
        "duplicates": split.duplicates.to_json(),
    }


def dataset_json(config: dict, splits: list[Split]) -> dict[str, Any]:
    """What dataset.json holds: the protocol, every split's files and its duplicate groups."""
    first = splits[0]
    info: dict[str, Any] = {
        "dataset": config["dataset"],
        "data": str(config["data"]),
        "protocol": {
            "folds": config["folds"],
            "fold_seed": config["fold_seed"],
            "seeds": seeds_of(config),
            "on_duplicates": config["on_duplicates"],
            "near_duplicates": config["near_duplicates"],
            "bootstrap_resamples": config["bootstrap"],
        },
        "duplicates": first.duplicates.to_json(),
    }
    if len(splits) == 1:
        info["train"] = {"sha256": first.train.fingerprint(), "files": first.train.file_list()}
        info["test"] = {"sha256": first.test.fingerprint(), "files": first.test.file_list()}
    else:
        everything = list(first.train) + list(first.test)
        info["files"] = sorted(
            ({"id": s.id, "image": str(s.image_path), "label": s.label} for s in everything),
            key=lambda e: e["id"],
        )
        info["folds"] = [split_info(s) for s in splits]
        groups = find_duplicates({"all": everything})
        info["duplicates"] = {
            "policy": config["on_duplicates"],
            "exact_groups": DuplicateReport(groups).to_json()["exact_groups"],
            "across_splits": sum(len(s.duplicates.across) for s in splits),
            "dropped_from_test": [p for s in splits for p in s.duplicates.dropped],
            "near_copies": _near_over_folds(splits),
        }
    return info


def _near_over_folds(splits: list[Split]) -> dict:
    """The near-copy check over every fold: each fold's pairs, and their total."""
    first = splits[0].duplicates.near_json()
    if not first["checked"]:
        return first
    per_fold = {s.name: s.duplicates.near_json() for s in splits}
    total = sum(f["across_splits"] for f in per_fold.values())
    return {"checked": True, "max_bits": first["max_bits"], "across_splits": total,
            "folds": per_fold}  # fmt: skip


def prepare(exp) -> tuple[list[Split], dict]:
    """The splits, checked for duplicates, then config.yaml and dataset.json in the results folder.

    The splits come first: a bad --data, or duplicates under "error", leave no folder behind.
    """
    from dualpatch.data import layout_of
    from dualpatch.fileio import write_json, write_text

    c = exp.config
    if c["folds"] is not None:
        check_folds(c)
    splits = make_splits(c["dataset"], c["data"], c["folds"], c["train_items"],
                         c["on_duplicates"], c["fold_seed"], layout_of(c),
                         near_bits=c["near_duplicates"])  # fmt: skip
    exp.out.mkdir(parents=True, exist_ok=True)
    write_text(exp.out / "config.yaml", yaml.safe_dump(c, sort_keys=False))
    info = dataset_json(c, splits)
    write_json(exp.out / "dataset.json", info)
    for s in splits:
        if s.duplicates.across:
            exp.log.warning("%s: %d test image(s) copy a training image (%s)",
                            s.name, len(s.duplicates.across), c["on_duplicates"])  # fmt: skip
    return splits, info


# ------------------------------------------------------------------------------ fold check
def inner_folds(config: dict) -> list[int]:
    """The k of every inner split a fold's training set must allow: the validation threshold's
    (``protocol.inner_split``'s default) and the rule choice's (``rule_selection: inner``, few-shot
    or not)."""
    from dualpatch.experiment.protocol import inner_split

    ks = [inner_split.__defaults__[-1]] if config["threshold"] == "validation" else []  # type: ignore[index]
    if config["rule_selection"] == "inner":
        ks.append(FEWSHOT_INNER_FOLDS)
    return ks


#: fewshot_rule.INNER_FOLDS, kept here so that checking a config imports no fewshot code; a test
#: keeps the two equal
FEWSHOT_INNER_FOLDS = 3


def check_folds(config: dict) -> None:
    """Refuse, before any work, a ``folds`` that this data cannot split into, in one line that
    names the largest K that works (found by the same splits, dry)."""
    from dualpatch.data import layout_of
    from dualpatch.errors import ConfigError
    from dualpatch.experiment.protocol import pooled

    everything = list(pooled(config["dataset"], config["data"], layout_of(config)))
    k, seed, ks = config["folds"], config["fold_seed"], inner_folds(config)
    with warnings.catch_warnings():  # sklearn's warnings about small classes: dry splits only
        warnings.simplefilter("ignore")
        problem = fold_problem(everything, k, seed, ks)
        if problem is None:
            return
        works = (j for j in range(k - 1, 1, -1) if not fold_problem(everything, j, seed, ks))
        largest = next(works, 0)
    advice = (
        f"use --folds {largest} or fewer"
        if largest
        else "no K works for this data; leave folds out (the dataset's split)"
        + (" or set threshold: none" if ks else "")
    )
    raise ConfigError(f"config: folds is {k}: {problem}; {advice}")


def fold_problem(samples: list, k: int, seed: int, inner: list[int]) -> str | None:
    """Why ``k`` folds of ``samples`` cannot be run (None: they can): every fold needs normal
    and defective training images, a defective test image, and the inner splits ``inner``."""
    from dualpatch.errors import ConfigError
    from dualpatch.experiment.protocol import group_folds

    labels = np.array([s.label for s in samples], dtype=bool)
    defective = int(labels.sum())
    try:
        folds = group_folds(samples, k, seed)
    except (ValueError, ConfigError):
        return f"{len(samples)} images ({defective} defective) cannot be split {k} ways"
    for f, (tr, te) in enumerate(folds):
        if not labels[te].any() or labels[tr].all() or not labels[tr].any():
            return (
                f"fold {f} would lack defective test images or normal or defective training "
                f"images ({defective} of {len(samples)} images are defective)"
            )
        for inner_k in inner:
            try:
                group_folds([samples[i] for i in tr], inner_k, seed)
            except (ValueError, ConfigError):
                return (
                    f"fold {f}'s {len(tr)} training images ({int(labels[tr].sum())} defective) "
                    f"are too few for the threshold's {inner_k}-fold inner validation split"
                )
    return None


def run_matrix(
    exp, runs: list[dict], splits: list[Split], nested: bool | None = None
) -> tuple[list[dict], dict]:
    """Every run (resolved settings) on every split × seed; (results, bootstrap replicates).

    ``nested``: one folder per split × seed (default: when there are several); a worker that
    fills one fold of a cross-validation sets it."""
    seeds = seeds_of(exp.config)
    counts = fold_counts([len(s.test) for s in splits], exp.config["bootstrap"], seed=0)
    if nested is None:
        nested = len(splits) > 1 or len(seeds) > 1
    results, boots = [], {}
    for i, settings in enumerate(runs):
        exp.log.info("run %d/%d: %s", i + 1, len(runs), settings["name"])
        events.emit(events.RunStarted(settings["name"], i, len(runs)))
        rule_of, records = inner_rule_choice(exp, settings, splits)
        result, boots[settings["name"]] = run_over_splits(exp, settings, splits, seeds, counts,
                                                          nested, rule_of)  # fmt: skip
        if records:
            result["metrics"]["rule"] = "inner: " + ", ".join(
                f"{name} {rule}" for name, rule in rule_of.items()
            )
            result["metrics"]["rule_choice"] = records
        results.append(result)
        events.emit(events.RunFinished(settings["name"], i, len(runs), bool(result["skipped"])))
    return results, boots


def inner_rule_choice(exp, settings: dict, splits: list[Split]) -> tuple[dict | None, dict]:
    """Under ``rule_selection: inner``, each split's dual rule chosen on an inner validation split
    of its training items (``fewshot_rule.inner_rules``); else (None, {}): the run's own rule."""
    if exp.config.get("rule_selection") != "inner" or settings["bank"] != "dual":
        return None, {}
    from dualpatch.experiment.fewshot_rule import inner_rules

    return inner_rules(exp, settings, splits, list(enumerate(splits)), None, 1)


def finish(exp, results: list[dict], boots: dict, info: dict, report: bool = True) -> Path:
    """metrics.json and metrics.csv (with comparisons against the first run), then report.html
    (unless ``report`` is False: a benchmark that only wants the figures)."""
    from dualpatch.fileio import write_json, write_text

    metrics = {r["name"]: r["metrics"] for r in results}
    comparisons, singles = compare_all(results, boots), against_singles(results, boots)
    for r in results:
        metrics[r["name"]]["comparisons"] = comparisons.get(r["name"], {})
        if r["name"] in singles:
            metrics[r["name"]]["against_singles"] = singles[r["name"]]
    write_json(exp.out / "metrics.json", metrics)
    write_text(exp.out / "metrics.csv", metrics_csv(metrics))
    page = exp.out / "report.html"
    if not report:
        return page
    if any(not r.get("skipped") for r in results) or not page.exists():
        from dualpatch.experiment.outputs import write_report

        write_report(exp, results, info)
    else:
        exp.log.info("every run finished before: report.html kept as it is")
    return page


def run_over_splits(
    exp, settings, splits, seeds, counts, nested, rule_of: dict[str, str] | None = None
) -> tuple[dict, dict]:
    """One run on every split × seed: its summary, pooled predictions and bootstrap replicates.
    ``rule_of``: a dual rule per split name in place of the run's (few-shot nested choice)."""
    from dualpatch.report.data import slug

    base = exp.out / "runs" / slug(settings["name"])
    points, reps = [], {k: [] for k in BOOTSTRAP_METRICS}
    pooled: dict[str, list] = {k: [] for k in ("ids", "labels", "scores", "maps", "where")}
    skipped = True
    size = tuple(settings["image_size"])
    for f, split in enumerate(splits):
        masks = np.stack([smp.mask(size) for smp in split.test])
        known = np.array([smp.mask_known for smp in split.test])  # unmasked defects: no pixels
        for seed in seeds:
            s = {**settings, "seed": seed, **({"rule": rule_of[split.name]} if rule_of else {})}
            run_dir = base / f"{split.name}-seed{seed}" if nested else base
            r = exp.run_one(s, split.train, split.test, split_info(split), run_dir)
            skipped &= bool(r.get("skipped"))
            points.append(r["metrics"])
            _add_replicates(reps, r, counts[f], masks, known)
            if seed == seeds[0]:  # the report shows the first seed, every fold pooled
                _pool(pooled, r, split, nested)
    with np.errstate(all="ignore"):
        boot = {k: np.nanmean(np.stack(v), axis=0) for k, v in reps.items()}
    summary = summarise(points, boot)
    summary["threshold_rule"] = points[0].get("threshold_rule", "")
    _write_summary(base, boot, {
        "metrics": summary,
        "splits": [s.name for s in splits],
        "seeds": seeds,
        "resamples": int(counts[0].shape[0]),
        "test_ids_sha256": ids_digest(pooled["ids"]),
    })  # fmt: skip
    result = {
        "name": settings["name"],
        "settings": settings,
        "metrics": summary,
        "ids": pooled["ids"],
        "labels": np.concatenate(pooled["labels"]),
        "scores": np.concatenate(pooled["scores"]),
        "maps": np.concatenate(pooled["maps"]),
        "where": pooled["where"],
        "threshold": 1.0 if nested else threshold_shown(points[0]),
        "oracle": not math.isfinite(points[0].get("threshold", math.nan)),
        "relative": nested,
        "skipped": skipped,
    }
    return result, boot


def _add_replicates(reps: dict, r: dict, counts: np.ndarray, masks: np.ndarray,
                    known: np.ndarray | None = None) -> None:  # fmt: skip
    """One run's bootstrap replicates of every metric, on its fold's resample counts; the pixel
    metrics leave out the images whose mask is not ``known`` (defects without a mask)."""
    thr = r["metrics"].get("threshold", math.nan)
    for k, v in image_metrics(r["labels"], r["scores"], counts, thr).items():
        reps[k].append(v)
    # maps as stored (float16), so a resumed run's intervals equal a fresh run's
    stored = np.asarray(r["maps"]).astype(np.float16).astype(np.float32)
    pixel_counts = counts if known is None else counts * np.asarray(known, dtype=counts.dtype)
    for k, v in pixel_metrics(pixel_histograms(stored, masks), pixel_counts).items():
        reps[k].append(v)


def _pool(pooled: dict, r: dict, split: Split, nested: bool) -> None:
    """Add one run's predictions to the report's pool; with several folds, scores and maps are
    divided by each fold's threshold so that they compare across folds."""
    thr = r["metrics"].get("threshold", math.nan)
    if not math.isfinite(thr):  # no validation threshold: show the oracle one
        thr = r["metrics"].get("f1_threshold", math.nan)
    scale = thr if nested and math.isfinite(thr) and thr > 0 else 1.0
    pooled["ids"] += list(r["ids"])
    pooled["labels"].append(np.asarray(r["labels"]))
    pooled["scores"].append(np.asarray(r["scores"]) / scale)
    pooled["maps"].append(np.asarray(r["maps"]) / scale)
    pooled["where"] += [(split, j) for j in range(len(r["ids"]))]


def _write_summary(base: Path, boot: dict, summary: dict) -> None:
    from safetensors.numpy import save_file

    from dualpatch.fileio import atomic_path, write_json

    base.mkdir(parents=True, exist_ok=True)
    with atomic_path(base / "bootstrap.safetensors") as tmp:
        save_file({k: v.astype(np.float64) for k, v in boot.items()}, str(tmp))
    write_json(base / "summary.json", summary)


def threshold_shown(metrics: dict) -> float:
    """The validation threshold, or the oracle one where no validation threshold was fitted."""
    t = metrics.get("threshold", math.nan)
    return t if math.isfinite(t) else metrics.get("f1_threshold", math.nan)


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def compare_all(results: list[dict], boots: dict[str, dict]) -> dict[str, dict]:
    """Each run against the first run (the baseline, usually single) on ``COMPARED`` metrics."""
    if len(results) < 2:
        return {}
    return {r["name"]: _against(r, results[0], boots) for r in results[1:]}


def _against(run: dict, base: dict, boots: dict[str, dict]) -> dict[str, dict]:
    """``run`` against ``base`` on each of ``COMPARED``: the observed difference of their metrics
    and a paired bootstrap interval of it."""
    a, b = run["name"], base["name"]
    return {
        k: {
            "against": b,
            **compare(
                boots[a][k], boots[b][k], (a, b), observed(run["metrics"], base["metrics"], k)
            ),
        }
        for k in COMPARED
    }


def against_singles(results: list[dict], boots: dict[str, dict]) -> dict[str, dict]:
    """With two or more single-bank runs (plain and re-weighted): each other run against every one
    of them, and per metric the strongest single (highest mean), so that a dual run's win is read
    against the best single bank and not only the first run."""
    singles = [r for r in results if r["settings"]["bank"] == "single"]
    if len(singles) < 2:
        return {}
    out = {}
    for r in results:
        if r["settings"]["bank"] == "single":
            continue
        each = {b["name"]: _against(r, b, boots) for b in singles}
        strongest = {k: max(singles, key=lambda b: b["metrics"].get(k, -1.0))["name"]
                     for k in COMPARED}  # fmt: skip
        out[r["name"]] = {
            "strongest_single": strongest,
            "against_strongest": {k: each[strongest[k]][k] for k in COMPARED},
            "against_each": each,
        }
    return out


def compare_runs(a: str | Path, b: str | Path, metrics=COMPARED) -> dict[str, dict]:
    """Compare two finished runs (``<results>/runs/<name>`` folders) evaluated on the same test
    images with the same resamples; a difference is a win only when its 95% interval excludes 0."""
    from safetensors.numpy import load_file

    a, b = Path(a), Path(b)
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    for key in ("test_ids_sha256", "resamples", "splits"):
        if sa[key] != sb[key]:
            raise ValueError(f"{a} and {b} were not evaluated on the same folds ({key} differs)")
    ba, bb = (
        load_file(str(a / "bootstrap.safetensors")),
        load_file(str(b / "bootstrap.safetensors")),
    )
    return {
        k: compare(ba[k], bb[k], (a.name, b.name), observed(sa["metrics"], sb["metrics"], k))
        for k in metrics
    }


def observed(a: dict, b: dict, key: str) -> float:
    """The observed difference of two runs' mean ``key`` (NaN where either lacks it)."""
    va, vb = a.get(key, math.nan), b.get(key, math.nan)
    return (
        float(va - vb) if isinstance(va, int | float) and isinstance(vb, int | float) else math.nan
    )


def metrics_csv(
    metrics: dict[str, dict],
    lead_columns: tuple[str, ...] = ("run",),
    lead: Callable[[str], list[str]] | None = None,
) -> str:
    """One row per run: ``lead_columns`` (by default the run's name; ``lead(name)`` gives other
    cells), then each metric with its std and 95% interval."""
    keys = [
        "image_auroc",
        "pixel_auroc",
        "image_ap",
        "pixel_aupro",
        "f1_max",
        "f1_at_threshold",
        "threshold",
        "fit_seconds",
        "images_per_second",
        "peak_rss_mb",
    ]
    columns = [c for k in keys for c in (k, f"{k}_std", f"{k}_ci_low", f"{k}_ci_high")]

    def cells(m: dict, k: str) -> list[float]:
        lo, hi = m.get(f"{k}_ci") or (float("nan"), float("nan"))
        return [m.get(k, float("nan")), m.get(f"{k}_std", float("nan")), lo, hi]

    # the csv module quotes a run name that holds a comma or a quote; joining strings did not
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*lead_columns, *columns])
    for name, m in metrics.items():
        first = lead(name) if lead else [name]
        writer.writerow([*first, *(f"{float(v):.6g}" for k in keys for v in cells(m, k))])
    return text.getvalue()
