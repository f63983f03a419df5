"""Why copy-paste collapses in the few-shot runs: the same saved fold-0 models (n = 1, draw 0) of
``benchmarks/fewshot.py``'s results folder, scored with the `patch` rule (the default) and with the
`weighted` rule. A diagnosis on test labels, not a selection: no default is changed by it.

    python benchmarks/fewshot_rule_check.py --data ../shared/data/kolektorsdd \
        --runs runs/kolektorsdd-fewshot/runs

Writes ``benchmarks/results/fewshot_rule_check.json``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kolektorsdd")
    parser.add_argument("--runs", default="runs/kolektorsdd-fewshot/runs")
    parser.add_argument("--out", default=str(HERE / "results" / "fewshot_rule_check.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from dualpatch import DualPatchCore
    from dualpatch.experiment.protocol import make_splits
    from dualpatch.fileio import write_json
    from dualpatch.metrics.evaluation import evaluate

    split = make_splits("kolektorsdd", args.data, 3, None, "drop", 0)[0]
    masks = np.stack([s.mask((320, 128)) for s in split.test])
    out = {}
    for run in ("dual_paste_n_1", "dual_n_1"):
        model = DualPatchCore.load(Path(args.runs) / run / "fold0-draw0-seed0" / "model")
        model.progress = False
        for rule in ("patch", "weighted"):
            model.rule = rule
            p = model.predict(split.test)
            r = evaluate(p.labels, p.image_scores, masks, p.anomaly_maps)
            keys = ("image_auroc", "image_ap", "pixel_aupro")
            out[f"{run} {rule}"] = {k: round(float(r[k]), 4) for k in keys}
            print(run, rule, out[f"{run} {rule}"], flush=True)
    write_json(Path(args.out), out)


if __name__ == "__main__":
    main()
