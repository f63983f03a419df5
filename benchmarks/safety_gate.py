"""The safety suite's image-level check: for every stored fit of ``safety_compute.py``, the
missing content (``dualpatch.bank.coverage``) of its held-out normals and of every scored set,
against the summaries of that fit's bank images, and of up to 32 bank images measured
leave-image-out (``bank.leave_image_out``), as a model's fit measures them. Written beside each
fit as ``<fit>.gate.npz`` (``<set>.miss``); ``safety_suite.py`` folds it into every run's scores as
``threshold.calibrate`` does.

It reads features from the feature cache that the fits filled (no backbone work when warm) and
refits nothing: the bank images are the fit's own (the same hold-out draw).

    python benchmarks/safety_gate.py --work runs/safety [--datasets ...] [--defaults]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import safety_compute as compute
import torch
from safety_data import DATASETS
from select_defaults import NORMALIZATIONS


def gate_and_score(name: str, norm: str, train: list, sets: dict[str, list], out: Path) -> None:
    """``<out>.gate.npz``: missing content of the held-out normals and of each set in ``sets``
    against the summaries of the bank images of the fit stored at ``out``."""
    from dualpatch.bank.coverage import leave_image_out, missing_content, summarise
    from dualpatch.models import DualPatchCore
    from dualpatch.threshold import holdout_split

    target = out.with_suffix(".gate.npz")
    if not out.exists():
        return
    arrays = dict(np.load(target)) if target.exists() else {}
    if "bank.leave_image_out" in arrays:
        return
    spec = DATASETS[name]
    normal = [s for s in train if s.label == 0]
    bank, held = holdout_split(normal, compute.HOLDOUT, seed=0)
    model = DualPatchCore(image_size=spec["size"], normalization=norm, cache_dir=spec["cache"],
                          progress=False)  # fmt: skip
    t0 = time.perf_counter()
    bank_feats = model.image_features(bank, desc=None)
    summaries = summarise(bank_feats)
    # as the model's fit measures it: the check's level is also at least this
    arrays["bank.leave_image_out"] = leave_image_out(bank_feats, summaries)
    del bank_feats
    stored = json.loads(out.with_suffix(".json").read_text())["sets"]
    for set_name, samples in {"held": held, **sets}.items():
        if f"{set_name}.miss" in arrays:  # written by an earlier run
            continue
        if set_name in stored and [s.id for s in samples] != stored[set_name]:
            raise SystemExit(f"{out}: set {set_name} differs from the stored fit's")
        values = [missing_content(model.image_features(samples[i : i + 16], desc=None), summaries)
                  for i in range(0, len(samples), 16)]  # fmt: skip
        arrays[f"{set_name}.miss"] = torch.cat(values).double().numpy()
    tmp = target.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, target)
    print(target.name, round(time.perf_counter() - t0, 1), flush=True)


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--norms", nargs="+", default=list(NORMALIZATIONS))
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=list(compute.FOLD_SEEDS))
    parser.add_argument("--work", default="runs/safety")
    parser.add_argument("--defaults", action="store_true")
    args = parser.parse_args()
    compute.fit_and_score = gate_and_score  # the same folds and sets, the check instead of a fit
    for name in args.datasets:
        record = {"command": "python " + " ".join(sys.argv), "started": time.time(),
                  "loadavg_before": os.getloadavg(), "cpus": os.cpu_count()}  # fmt: skip
        compute.run_dataset(name, Path(args.work), args.norms, args.fold_seeds, args.defaults)
        record.update(finished=time.time(), loadavg_after=os.getloadavg())
        record["wall_seconds"] = round(record["finished"] - record["started"], 1)
        stem = "gate_run_defaults" if args.defaults else "gate_run"
        (Path(args.work) / name / f"{stem}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
