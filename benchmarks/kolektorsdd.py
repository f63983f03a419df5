"""KolektorSDD benchmark under the cross-validated protocol, through the public experiment runner.

Protocol (default): 3 item-level folds that keep duplicated items together (kos01 = kos26,
kos27 = kos34), 3 seeds, test copies of training images dropped (none remain under these folds),
Lite0 at 320x128, normal coreset 10 %, defect coreset 10 %. Every metric is the mean ± std over
folds × seeds with a 95% bootstrap interval; each dual rule is compared with the single bank by a
paired bootstrap. ``--protocol split`` reruns the old single split (kos01-33 train), once with
the kos27/kos34 leak kept and once with the copies dropped.

    python benchmarks/kolektorsdd.py [--data ../shared/data/kolektorsdd] [--protocol cv|split]

writes ``benchmarks/results/kolektorsdd_cv.json`` (or ``kolektorsdd_split.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RUNS = [
    {"name": "single", "bank": "single"},
    # the PatchCore paper's re-weighted score (anomalib's default): each dual run is also read
    # against the stronger of the two singles (metrics.json's ``against_singles``)
    {"name": "single-reweighted", "bank": "single", "reweight": True},
    {"name": "dual-weighted", "bank": "dual", "rule": "weighted"},
    {"name": "dual-patch", "bank": "dual", "rule": "patch"},
    {"name": "dual-seed", "bank": "dual", "rule": "seed"},
]
#: more variants for ``--runs all`` (the defect source and the normalisation are also compared on
#: validation data by select_defaults.py)
EXTRA_RUNS = [
    {"name": "dual-weighted-crops", "bank": "dual", "rule": "weighted", "defects": "crop"},
    {"name": "dual-weighted-imagenet", "bank": "dual", "normalization": "imagenet"},
]
RESULTS = Path(__file__).parent / "results"


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []


class Clock:
    """The whole benchmark's wall time (worker processes and summary) and the 1-minute load
    average sampled while it runs: they go into the results JSON, not into prose."""

    def __init__(self) -> None:
        self.t0, self.samples = time.perf_counter(), [os.getloadavg()[0]]

    def sample(self) -> None:
        self.samples.append(os.getloadavg()[0])

    def record(self) -> dict:
        self.sample()
        return {
            "wall_seconds_total": round(time.perf_counter() - self.t0, 1),
            "wall_seconds_is": "the whole command: every worker process and the summary",
            "load_average_1min": {
                "min": min(self.samples),
                "max": max(self.samples),
                "samples": len(self.samples),
            },  # fmt: skip
            "cpus": os.cpu_count(),
        }


def run(
    data: str,
    out: Path,
    folds: int | None,
    seeds: list[int],
    on_duplicates: str,
    runs=RUNS,
    summary: bool = True,
    only_fold: int | None = None,
    threshold: str = "validation",
) -> dict:
    """One experiment through ``dualpatch.experiment.runner`` (the code path of ``dualpatch run``).

    ``summary=False`` only fits and scores (what a per-seed worker process does)."""
    from dualpatch.experiment.config import load_config
    from dualpatch.experiment.runner import Experiment

    cfg = load_config(
        None,
        [
            "dataset=kolektorsdd",
            f"data={data}",
            f"out={out}",
            "name=kolektorsdd-benchmark",
            f"folds={'null' if folds is None else folds}",
            f"seeds={seeds}",
            f"on_duplicates={on_duplicates}",
            f"threshold={threshold}",
        ],
    )
    cfg["runs"] = runs
    from dualpatch.experiment.config import resolve_run
    from dualpatch.experiment.crossval import finish, prepare, run_matrix

    t0, load0 = time.perf_counter(), load()
    exp = Experiment(cfg)
    splits, info = prepare(exp)
    resolved = [resolve_run(cfg, r) for r in cfg["runs"]]
    if not summary:
        if only_fold is not None:
            splits = [splits[only_fold]]
        run_matrix(exp, resolved, splits, nested=True)
        return {}
    # the runner's own steps, without report.html (an overlay per test image and run)
    results, boots = run_matrix(exp, resolved, splits)
    finish(exp, results, boots, info, report=False)
    metrics = json.loads((out / "metrics.json").read_text())
    per_eval = {}
    for r in runs:
        rdir = out / "runs" / r["name"]
        per_eval[r["name"]] = {
            p.name: json.loads((p / "metrics.json").read_text())
            for p in sorted(rdir.iterdir())
            if (p / "metrics.json").exists()
        } or {"split": json.loads((rdir / "metrics.json").read_text())}
    dataset = json.loads((out / "dataset.json").read_text())
    return {
        "protocol": dataset["protocol"],
        "folds": [
            {k: f[k] for k in ("name", "train", "test", "train_items")}
            for f in dataset.get("folds", [])
        ],
        "duplicates": {k: v for k, v in dataset["duplicates"].items() if k != "exact_groups"},
        "metrics": metrics,
        "per_evaluation": per_eval,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "wall_seconds_is": "this summary step only (worker processes ran before it): see machine",
        "loadavg_before": load0,
        "loadavg_after": load(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("DUALPATCH_DATA", "../shared/data/kolektorsdd")
    )
    parser.add_argument("--protocol", choices=("cv", "split"), default="cv")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", default="runs/bench", help="Where the experiment folders go.")
    parser.add_argument("--runs", choices=("rules", "all"), default="rules")
    parser.add_argument(
        "--jobs", type=int, default=1, help="Run the seeds in this many processes, then summarise."
    )
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only-fold", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--threshold",
        choices=("validation", "none"),
        default="validation",
        help="none skips the validation fit of each evaluation (F1 at the threshold not measured)",
    )
    args = parser.parse_args()
    from dualpatch.fileio import write_json

    command = "python " + " ".join(sys.argv)
    work = Path(args.work)
    clock = Clock()
    if args.jobs > 1 and args.protocol == "cv":
        # one worker process per fold x seed fills the experiment folder (each evaluation has its
        # own run folder); the summary below then finds every evaluation finished and aggregates
        tasks = [(f, seed) for seed in args.seeds for f in range(args.folds)]
        procs: list = []
        for f, seed in tasks:
            cmd = [sys.executable, __file__, "--seeds", str(seed), "--only-fold", str(f),
                   "--no-summary", "--runs", args.runs, "--work", args.work, "--data", args.data,
                   "--folds", str(args.folds), "--threshold", args.threshold]  # fmt: skip
            procs.append(subprocess.Popen(cmd))
            while sum(p.poll() is None for p in procs) >= args.jobs:
                time.sleep(5)
                clock.sample()
        while any(p.poll() is None for p in procs):
            time.sleep(5)
            clock.sample()
        if any(p.wait() for p in procs):
            sys.exit("a worker process failed")
    if args.protocol == "cv":
        runs = RUNS + (EXTRA_RUNS if args.runs == "all" else [])
        result = run(
            args.data, work / "kolektorsdd-cv", args.folds, args.seeds, "drop", runs,
            not args.no_summary, args.only_fold, args.threshold,
        )  # fmt: skip
        out = RESULTS / "kolektorsdd_cv.json"
    else:
        result = {
            "leak kept (kos34 in test copies kos27 in train)": run(
                args.data,
                work / "kolektorsdd-split-leak",
                None,
                args.seeds,
                "warn",
                RUNS,
                not args.no_summary,
            ),
            "copies dropped from test": run(
                args.data,
                work / "kolektorsdd-split-dropped",
                None,
                args.seeds,
                "drop",
                RUNS,
                not args.no_summary,
            ),
        }
        out = RESULTS / "kolektorsdd_split.json"
    if args.no_summary:
        return
    write_json(out, {"command": command, "result": result, "machine": clock.record()})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
