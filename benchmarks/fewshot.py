"""Few-shot benchmark on KolektorSDD: what do n real defects, and synthetic ones from them, buy?

It runs ``configs/kolektorsdd-fewshot.yaml`` through the public runner (``dualpatch run``'s code:
``Experiment.run`` with ``defect_shots``): 3 item-level folds (duplicated items kept together, test
copies of training images dropped), for each n in ``defect_shots`` and each seeded draw of n
defective training images, the sources single, dual (the n real defects only), dual+feature
(feature-space interpolation), dual+paste and dual+ddpm (only at the n and draws the config gives
it), each synthetic source made from those n defects only. Then it copies the per-(run, n) figures
(mean ± std over folds × draws, 95% bootstrap intervals, paired differences against
dual-real-only and single, the issue's goal check and the advice per n) to
``benchmarks/results/fewshot_cv.json`` and draws ``docs/fewshot.png``.

A stopped run resumes: finished fits are kept in the results folder.

    python benchmarks/fewshot.py --data ../shared/data/kolektorsdd --out runs/kolektorsdd-fewshot
    python benchmarks/fewshot.py --collect-only --out runs/kolektorsdd-fewshot
    python benchmarks/fewshot.py --advise-only --json benchmarks/results/fewshot_cv.json

``--advise-only`` recomputes a written JSON's ``advice_and_goal`` from its own ``results`` with
the library's ``goal_and_advice`` (no fit, no figure changed), recording that it did so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KEYS = ("image_auroc", "image_ap", "pixel_aupro", "pixel_auroc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("DUALPATCH_DATA", "../shared/data/kolektorsdd")
    )
    parser.add_argument(
        "--config", default=str(HERE.parent / "configs" / "kolektorsdd-fewshot.yaml")
    )
    parser.add_argument(
        "--out", default="runs/kolektorsdd-fewshot", help="the runner's results folder"
    )
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--json", default=str(HERE / "results" / "fewshot_cv.json"))
    parser.add_argument("--plot", default=str(HERE.parent / "docs" / "fewshot.png"))
    parser.add_argument(
        "--collect-only", action="store_true", help="read a finished results folder"
    )
    parser.add_argument(
        "--partial", action="append", default=[],
        help="RUN: compare its finished (fold, draw) folders with dual-real-only's at every n, "
        "for a run left out of the config because not all its folds finished",
    )  # fmt: skip
    parser.add_argument(
        "--note", action="append", default=[],
        help="RUN=TEXT: what made a run's synthetic images (e.g. the generator's code), kept in "
        "the JSON's 'synthetic_code'",
    )  # fmt: skip
    parser.add_argument(
        "--advise-only", action="store_true",
        help="recompute --json's advice_and_goal from its results (no fit)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.advise_only:
        readvise(Path(args.json))
        return

    from dualpatch.environment import environment
    from dualpatch.experiment.config import load_config, resolve_run
    from dualpatch.experiment.crossval import prepare
    from dualpatch.experiment.fewshot_runner import finish_fewshot, run_fewshot
    from dualpatch.experiment.runner import COMMAND, Experiment
    from dualpatch.fileio import mark_output, write_json
    from dualpatch.report.data import slug
    from dualpatch.report.fewshot import plot_fewshot

    out = Path(args.out)
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    if not args.collect_only:  # Experiment.run's steps, without report.html's gallery
        cfg = load_config(args.config, [f"data={args.data}", f"out={out}", *args.set])
        exp = Experiment(cfg, force=True)
        exp.check_output()
        splits, info = prepare(exp)
        mark_output(exp.out, COMMAND)
        write_json(exp.out / "environment.json", environment())
        runs = [resolve_run(cfg, run) for run in cfg["runs"]]
        finish_fewshot(exp, *run_fewshot(exp, runs, splits), info, report=False)
    metrics = json.loads((out / "metrics.json").read_text())
    advice = metrics.pop("fewshot")
    config = load_config(out / "config.yaml")
    # metrics.json's keys are sorted as text ("1", "10", "2"): back to the config's order of n
    order = [str(n) for n in config["defect_shots"]]
    metrics = dict(
        sorted(
            metrics.items(),
            key=lambda kv: (
                kv[1]["run"],
                -1 if kv[1]["defect_shots"] is None else order.index(str(kv[1]["defect_shots"])),
            ),
        )
    )
    advice = {n: advice[n] for n in order if n in advice}
    entries = [
        {"name": name, "run": m["run"], "shots": m["defect_shots"], "draws": m["draws"]}
        for name, m in metrics.items()
    ]
    summary = {
        name: {k: m[k] for k in m if k.split("_ci")[0].split("_std")[0] in KEYS}
        | {"run": m["run"], "defect_shots": m["defect_shots"], "draws": m["draws"],
           "n_evaluations": m["n_evaluations"], "fit_seconds": m.get("fit_seconds")}
        | {c: m[c] for c in ("comparisons", "against_single", "rule") if c in m}
        | ({"rule_choice": chosen_rules(m["rule_choice"])} if "rule_choice" in m else {})
        for name, m in metrics.items()
    }  # fmt: skip
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE)
    write_json(Path(args.json), {
        "command": "python benchmarks/fewshot.py --data ../shared/data/kolektorsdd "
                   f"--out {args.out}" + "".join(f" --set {s}" for s in args.set)
                   + "".join(f" --partial {r}" for r in args.partial)
                   + "".join(f" --note '{n}'" for n in args.note),
        "commit": head.stdout.strip(),
        "protocol": {k: config[k] for k in ("folds", "fold_seed", "seeds", "on_duplicates",
                                            "defect_shots", "defect_draws", "bootstrap",
                                            "rule_selection")},
        "settings": {k: config[k] for k in ("backbone", "image_size", "coreset_ratio",
                                            "defect_coreset", "rule", "threshold")},
        "runs": config["runs"],
        "synthetic_code": dict(note.split("=", 1) for note in args.note),
        "results": summary,
        "advice_and_goal": advice,
        "matched_draws": matched_draws(out, entries, config["bootstrap"]),
        "partial_runs": {
            f"{run} n={n}": paired_on_folders(out, f"{run} n={n}", config["bootstrap"])
            for run in args.partial for n in config["defect_shots"]
            if (out / "runs" / slug(f"{run} n={n}")).is_dir()
        },
        "load": load + [os.getloadavg()[0]],
        "minutes_this_call": round((time.perf_counter() - t0) / 60, 1),
    })  # fmt: skip
    title = "KolektorSDD, 3 folds: mean ± std over folds × draws, 95% bootstrap band"
    plot_fewshot(metrics, entries, args.plot, title=title)
    print(markdown(summary, advice))
    saved = json.loads(Path(args.json).read_text())
    for name, row in (saved["matched_draws"] | saved["partial_runs"]).items():
        if not row["evaluations"]:
            continue
        print(f"{name} vs {row['against']} on {', '.join(row['evaluations'])}: "
              + "; ".join(f"{k} {row[k]['mean']:.3f} vs {row[k]['against_mean']:.3f}, "
                          f"diff {row[k]['difference']:+.3f} [{row[k]['ci'][0]:+.3f}, "
                          f"{row[k]['ci'][1]:+.3f}] {row[k]['verdict']}"
                          for k in ("image_auroc", "image_ap")))  # fmt: skip
    print(f"wrote {args.json} and {args.plot}")


def readvise(path: Path) -> None:
    """Recompute ``advice_and_goal`` of a written JSON from its ``results`` and ``runs`` with the
    library's ``goal_and_advice`` (advice chosen on inner folds where the results carry the nested
    rule choice); the figures are not touched."""
    from dualpatch.experiment.fewshot_runner import goal_and_advice, is_real_only
    from dualpatch.fileio import write_json

    saved = json.loads(path.read_text())
    runs = {r["name"]: r for r in saved["runs"]}
    entries = [
        {"name": name, "run": m["run"], "shots": m["defect_shots"],
         "bank": runs[m["run"]]["bank"], "real_only": is_real_only(runs[m["run"]])}
        for name, m in saved["results"].items()
    ]  # fmt: skip
    advice = goal_and_advice(saved["results"], entries)
    order = list(saved["advice_and_goal"])
    saved["advice_and_goal"] = {n: advice[n] for n in order if n in advice}
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE)
    saved["advice_recomputed"] = (
        f"advice_and_goal recomputed from this file's results by 'python benchmarks/fewshot.py "
        f"--advise-only --json {path.name}' at commit {head.stdout.strip()[:7]} (issue 24): each "
        "n's 'chosen_on' says what its advice was chosen on; 'test_fold_reading' is the advice "
        "as first published, read from the test folds; no figure changed"
    )
    write_json(path, saved)
    for n, a in saved["advice_and_goal"].items():
        print(f"n={n}: use {a['use']} ({a['why']}); test-fold reading: "
              f"{a['test_fold_reading']['use']}")  # fmt: skip


def matched_draws(out: Path, entries: list[dict], resamples: int) -> dict:
    """Runs with fewer draws than dual-real-only (e.g. a DDPM on draw 0 only) against
    dual-real-only on exactly the same (fold, draw) evaluations."""
    draws = {e["name"]: e["draws"] for e in entries}
    todo = [e["name"] for e in entries
            if e["shots"] is not None and e["run"] != "dual"
            and draws.get(f"dual n={e['shots']}", 0) > e["draws"]]  # fmt: skip
    return {name: paired_on_folders(out, name, resamples) for name in todo}


def paired_on_folders(out: Path, name: str, resamples: int) -> dict:
    """``name`` ("<run> n=<n>") against "dual n=<n>" on the (fold, draw) evaluations both have in
    ``out``: means, and the paired bootstrap difference of image AUROC and AP (the runner's
    resamples: ``fold_counts`` over the folds' test sizes, seed 0)."""
    from safetensors.numpy import load_file

    from dualpatch.metrics.uncertainty import compare, fold_counts, image_metrics
    from dualpatch.report.data import slug

    def folders(run: str) -> dict[str, Path]:
        found = (out / "runs" / slug(run)).glob("fold*-seed*")
        return {p.name: p for p in sorted(found) if (p / "predictions.safetensors").is_file()}

    base = "dual n=" + name.rsplit(" n=", 1)[1]
    theirs = folders(base)
    pairs = [(p, theirs[k]) for k, p in folders(name).items() if k in theirs]
    preds = [[load_file(str(q / "predictions.safetensors")) for q in pair] for pair in pairs]
    counts = fold_counts([len(a["labels"]) for a, _ in preds], resamples, seed=0)
    row: dict = {"evaluations": [p.name for p, _ in pairs], "against": base}
    if not pairs:
        return row
    for k in ("image_auroc", "image_ap"):
        reps = [np.mean([image_metrics(d["labels"], d["scores"], c)[k]
                         for (d, c) in zip(side, counts, strict=True)], axis=0)
                for side in zip(*preds, strict=True)]  # fmt: skip
        point = [float(np.mean([json.loads((q / "metrics.json").read_text())[k] for q in side]))
                 for side in zip(*pairs, strict=True)]  # fmt: skip
        row[k] = {"mean": point[0], "against_mean": point[1],
                  **compare(reps[0], reps[1], (name, base), point[0] - point[1])}  # fmt: skip
    return row


def chosen_rules(choice: dict) -> dict:
    """Per fold: the rule chosen, each rule's mean validation criterion, the validation set's
    size and every inner draw's validation figures per rule (the record less its signature)."""
    return {fold: {k: v for k, v in c.items() if k != "signature"} for fold, c in choice.items()}


def markdown(summary: dict, advice: dict) -> str:
    """The README's tables: mean ± std [95% interval] per run and n, and the advice per n."""

    def cell(m: dict, k: str) -> str:
        lo, hi = m.get(f"{k}_ci") or (float("nan"), float("nan"))
        return f"{m[k]:.3f} ± {m[f'{k}_std']:.3f} [{lo:.3f}, {hi:.3f}]"

    lines = ["| run | n | draws × folds | rule (per fold) | image AUROC | image AP | pixel AUPRO |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
    for m in summary.values():
        n = "any (no defects)" if m["defect_shots"] is None else str(m["defect_shots"])
        rule = m.get("rule") or "—"
        lines.append(f"| {m['run']} | {n} | {m['n_evaluations']} | {rule} | "
                     + " | ".join(cell(m, k) for k in KEYS[:3]) + " |")  # fmt: skip
    lines += ["", "| n | use | rule | why | goal |", "| --- | --- | --- | --- | --- |"]
    for n, a in advice.items():
        met = [k for k, g in a["goal"].items() if g["met"]]
        goal = ("met by " + ", ".join(met) if met else "not met") if a["goal"] else "not checked"
        lines.append(f"| {n} | {a['use']} | {a.get('rule')} | {a['why']} | {goal} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
