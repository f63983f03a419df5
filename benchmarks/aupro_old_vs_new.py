"""Old (200 sampled thresholds) against exact AUPRO on the same maps, for every rule.

The old implementation is read from git history (commit 3f2d9a9, the last one with it), so both
are measured on the same predictions in the same run. One single-bank and one dual-bank model are
fitted with the public API on KolektorSDD's default split; the dual rules share the fitted banks.
Writes ``benchmarks/results/aupro_old_vs_new.json``.

    python benchmarks/aupro_old_vs_new.py --data ../shared/data/kolektorsdd [--size 320 128]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import time
import types
from pathlib import Path

import numpy as np

from dualpatch import DualPatchCore, PatchCore
from dualpatch.data import KolektorSDD
from dualpatch.fileio import write_json
from dualpatch.metrics.evaluation import aupro
from dualpatch.scoring import DUAL_RULES

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "aupro_old_vs_new.json"
OLD_COMMIT = "3f2d9a9"


def old_aupro():
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:src/dualpatch/evaluation.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("old_evaluation")
    exec(compile(source, f"{OLD_COMMIT}:evaluation.py", "exec"), module.__dict__)
    return module.aupro


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "kolektorsdd"))
    ap.add_argument("--size", type=int, nargs=2, default=(320, 128), metavar=("H", "W"))
    args = ap.parse_args()
    size = tuple(args.size)
    train, test = KolektorSDD(args.data, "train"), KolektorSDD(args.data, "test")
    masks = np.stack([s.mask(size) for s in test])
    params = dict(image_size=size, progress=False)
    t0 = time.perf_counter()
    models = {"single": PatchCore(**params).fit(train.normal())}
    dual = DualPatchCore(**params).fit(train.normal(), train.defective())
    for rule in DUAL_RULES:
        models[f"dual-{rule}"] = copy.copy(dual)
        models[f"dual-{rule}"].rule = rule
    fit_s = time.perf_counter() - t0
    before = old_aupro()
    rows = {}
    for name, model in models.items():
        maps = model.predict(test).anomaly_maps
        rows[name] = {"old_aupro": before(masks, maps), "exact_aupro": aupro(masks, maps)}
        print(name, json.dumps(rows[name]))
    write_json(
        OUT,
        {
            "command": f"python benchmarks/aupro_old_vs_new.py --size {size[0]} {size[1]}",
            "protocol": "KolektorSDD v1 default split (items 1-33 train), Lite0, defaults, "
            "defect bank from training images; dual rules share one fitted model",
            "old": f"evaluation.aupro at {OLD_COMMIT}: 200 thresholds from the map maximum "
            "down to the normal pixels' 70th percentile",
            "code_commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
            "load_average": list(os.getloadavg()),
            "fit_seconds": round(fit_s, 1),
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
