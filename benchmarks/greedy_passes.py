"""Exact greedy k-center: the previous one-matrix-vector-product-per-pick loop against the
pass-wise version now in ``dualpatch.bank.memory.greedy_kcenter`` (same picks up to float rounding),
on real projected patch features (the first 83 images cached by coreset_scaling.py: 85k rows,
1,000 picks). Writes benchmarks/results/greedy_passes.json.

    PYTHONPATH=src python benchmarks/greedy_passes.py
"""

from __future__ import annotations

import glob
import json
import os
import time

import torch
from safetensors.torch import load_file

from dualpatch.bank.memory import greedy_kcenter, kcenter_radius, project, projection_for


def per_pick(x: torch.Tensor, n_select: int, seed: int = 0) -> torch.Tensor:
    """The previous implementation: one addmv over all rows per pick."""
    n = x.shape[0]
    sq = (x * x).sum(1)
    first = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
    selected = torch.empty(n_select, dtype=torch.long)
    selected[0] = first
    min_d = sq + sq[first] - 2 * (x @ x[first])
    d = torch.empty_like(min_d)
    for i in range(1, n_select):
        idx = int(torch.argmax(min_d))
        selected[i] = idx
        torch.addmv(sq, x, x[idx], beta=1, alpha=-2, out=d)
        d += sq[idx]
        torch.minimum(min_d, d, out=min_d)
    return selected


def main() -> None:
    torch.set_num_threads(2)
    files = sorted(glob.glob("runs/bench-coreset/cache/*.safetensors"))[:83]
    feats = torch.cat([load_file(f)["features"].reshape(-1, 152) for f in files])
    x = project(feats, projection_for(152, 128, 0))
    out = {
        "command": "PYTHONPATH=src python benchmarks/greedy_passes.py",
        "rows": x.shape[0],
        "picks": 1000,
        "threads": 2,
        "load_before": os.getloadavg(),
    }
    for name, fn in (("per_pick", per_pick), ("passes", greedy_kcenter)):
        t = time.perf_counter()
        picks = fn(x, 1000)
        out[name] = {
            "seconds": round(time.perf_counter() - t, 2),
            "radius": round(kcenter_radius(x, picks), 4),
        }
        out[name + "_picks"] = picks
    differ = (out.pop("per_pick_picks") != out.pop("passes_picks")).nonzero()
    # float32 rounding in another order of operations can flip a near-tie; picks agree until then
    out["first_different_pick"] = int(differ[0]) if len(differ) else None
    out["speedup"] = round(out["per_pick"]["seconds"] / out["passes"]["seconds"], 1)
    out["load_after"] = os.getloadavg()
    with open("benchmarks/results/greedy_passes.json", "w") as f:
        f.write(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
