"""Where the approximate coreset (``memory.narrowed_kcenter``) makes exact greedy's picks, and
where it does not: k-center radius against exact greedy's and the share of greedy's picks it
makes, on several synthetic generators (coreset ratios of 1 %, 5 % and 10 %), label-free.

    PYTHONPATH=src python benchmarks/approx_claims.py [--out benchmarks/results/approx_claims.json]

Generators (each 4,000 rows in 32-d, projected to 16-d as in the unit test, seeds 0-2):
``blobs12`` (the unit test's: 12 Gaussian blobs of unequal spread), ``blobs30`` (30 blobs),
``curve`` (a 1-D curve, a random smooth closed loop, with a little noise), ``uniform``
(a 32-d uniform cube: no structure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from dualpatch.bank.memory import (
    greedy_kcenter,
    kcenter_radius,
    narrowed_kcenter,
    project,
    projection_for,
)

# the generators are the unit tests' own (tests/support/coreset.py), so both measure one thing
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.coreset import GENERATORS  # noqa: E402

N, DIM, PROJ = 4000, 32, 16
RATIOS = (0.01, 0.05, 0.1)


def measure(name: str, seed: int, ratio: float) -> dict:
    x = project(GENERATORS[name](N, DIM, seed), projection_for(DIM, PROJ, seed))
    k = max(4, round(ratio * N))
    exact = greedy_kcenter(x, k, seed)
    report: dict = {}
    approx = narrowed_kcenter(x, k, seed, report=report)
    r_exact, r_approx = kcenter_radius(x, exact), kcenter_radius(x, approx)
    same = len(set(exact.tolist()) & set(approx.tolist())) / k
    return {
        "generator": name,
        "seed": seed,
        "coreset_ratio": ratio,
        "picks": k,
        "radius_ratio": round(r_approx / r_exact, 4),
        "bound_ratio": round(report["radius_bound"] / r_exact, 4),
        "greedy_picks_made": round(same, 4),
        "row_update_share": round(report["row_updates"] / report["exact_row_updates"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/approx_claims.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    rows = [measure(g, s, r) for g in GENERATORS for r in RATIOS for s in (0, 1, 2)]
    summary = {}
    for g in GENERATORS:
        for r in RATIOS:
            sel = [x for x in rows if x["generator"] == g and x["coreset_ratio"] == r]
            summary[f"{g} {r:.0%}"] = {
                k: [min(x[k] for x in sel), max(x[k] for x in sel)]
                for k in ("radius_ratio", "greedy_picks_made", "row_update_share")
            }
    out = {
        "command": "PYTHONPATH=src python " + " ".join(sys.argv),
        "rows": N,
        "dim": DIM,
        "projection": PROJ,  # fmt: skip
        "summary_min_max_over_seeds": summary,
        "runs": rows,
        "machine": {
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "load_average_1min": [load0, os.getloadavg()[0]],
            "threads": 1,
        },  # fmt: skip
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
