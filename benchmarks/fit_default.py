"""A fit at the default settings on a large set: ``dualpatch fit`` with no options but the data's,
threshold included, on 666 normal training images at 256x256 (682k patches), timed on the 2 cores
(issue 25: at most 2 minutes), and its accuracy against the same fit with uncapped exact banks
(``--coreset-rows`` larger than any bank: the 10 % greedy coreset of before the row budget).

The set is generated (``make_demo_dataset``, seed 3, as ``coreset_scaling.py``'s): 666 good and 66
defective training images (the defect bank of the default dual model), 200 good and 200 defective
test images. Each fit runs in its own process with an empty feature cache, its wall time, peak RSS
and the share of the CPU other processes took meanwhile recorded (``line_speed.run_rss``); above
``--max-foreign-cpu`` (10 %) nothing is written. Both models are evaluated on the test images; the
image AUROC / AP difference has a paired bootstrap interval over the test images (one split: no
fold-level interval here; the fold-level comparison of the row budget with exact search on the
three real datasets is ``search_candidates.json``).

    python benchmarks/fit_default.py [--work runs/fit-default]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from line_speed import run_header, run_rss, uptime

HERE = Path(__file__).resolve().parent
SIZE = (256, 256)
COUNTS = {"train": (666, 66), "test": (200, 200)}
#: a row budget larger than any bank here: the uncapped 10 % coreset
UNCAPPED = 10**9
RESAMPLES = 1000


def fit(root: Path, out: Path, cache: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "dualpatch.cli", "fit", "--dataset", "demo", "--data", str(root)]
    cmd += ["--image-size", str(SIZE[0]), str(SIZE[1]), "--out", str(out), *extra]
    env = dict(os.environ, DUALPATCH_CACHE=str(cache), DUALPATCH_OFFLINE="1")
    r = run_rss(cmd, env)
    return {"command": " ".join(cmd), **{k: v for k, v in r.items() if k != "stdout"}}


def evaluate(root: Path, model: Path, out: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics.json, labels, image scores) of ``model`` on the test images."""
    cmd = [sys.executable, "-m", "dualpatch.cli", "evaluate", "--model", str(model)]
    cmd += ["--dataset", "demo", "--data", str(root), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, DUALPATCH_CACHE=""))
    with open(out / "scores.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image_id"])
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    return json.loads((out / "metrics.json").read_text()), labels, scores


def bank_rows(model: Path) -> dict[str, int]:
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "np") as f:
        return {k: f.get_slice(k).get_shape()[0] for k in f.keys() if k.endswith("bank")}


def main() -> None:
    from dualpatch.data import make_demo_dataset
    from dualpatch.fileio import write_json
    from dualpatch.metrics.uncertainty import compare, image_metrics, resample_counts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/fit-default")
    ap.add_argument("--max-foreign-cpu", type=float, default=0.10)
    ap.add_argument("--out", default=str(HERE / "results" / "fit_default.json"))
    args = ap.parse_args()
    work = Path(args.work)
    root = make_demo_dataset(work / "data", seed=3, counts=COUNTS, size=SIZE)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result: dict = {
        **run_header(),
        "data": f"generated (make_demo_dataset seed 3), {SIZE[0]}x{SIZE[1]}, counts {COUNTS}",
        "goal": "the default fit, threshold included, in at most 120 s on the 2 cores",
    }
    runs = {"default": [], "uncapped_exact_10pct": ["--coreset-rows", str(UNCAPPED)]}
    scored = {}
    for name, extra in runs.items():
        model = work / f"{name}-{stamp}"
        result[name] = {"fit": fit(root, model, work / f"cache-{name}-{stamp}", extra)}
        result[name]["bank_rows"] = bank_rows(model)
        metrics, labels, scores = evaluate(root, model, work / f"eval-{name}-{stamp}")
        result[name]["metrics"] = metrics
        scored[name] = (labels, scores)
        print(name, json.dumps(result[name]), flush=True)
    labels = scored["default"][0]
    assert (labels == scored["uncapped_exact_10pct"][0]).all()
    weights = resample_counts(len(labels), RESAMPLES, np.random.default_rng(0)).astype(np.float64)
    boot = {n: image_metrics(labels, s, weights) for n, (_, s) in scored.items()}
    result["default_minus_uncapped"] = {
        m: compare(
            boot["default"][m],
            boot["uncapped_exact_10pct"][m],
            ("default", "uncapped"),
            observed=result["default"]["metrics"][m] - result["uncapped_exact_10pct"]["metrics"][m],
        )  # fmt: skip
        for m in ("image_auroc", "image_ap")
    }
    fit_s = result["default"]["fit"]["wall_s"]
    result["default_fit_s"] = fit_s
    result["goal_met"] = fit_s <= 120
    result["uptime_end"] = uptime()
    foreign = result["default"]["fit"]["foreign_cpu_fraction"]
    if foreign > args.max_foreign_cpu:
        raise SystemExit(f"other processes took {foreign:.0%} of the CPU during the default fit")
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("default_fit_s", "goal_met")}))


if __name__ == "__main__":
    main()
