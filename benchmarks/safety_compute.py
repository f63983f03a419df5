"""The safety suite's heavy half: fit the banks of every (dataset, normalisation, fold seed,
outer fold) and of each outer fold's inner split, and store every scored image's per-patch
distances to both banks (plus the single bank's re-weighted score, which needs the features).

Rules are functions of the two distance maps, so ``safety_suite.py`` applies every rule,
threshold and selection to these files afterwards, in seconds, without refitting.

    python benchmarks/safety_compute.py --datasets kolektorsdd bsdata --work runs/safety
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safety_data import DATASETS, pooled_samples
from safety_inputs import foreign_set, pasted_set
from select_defaults import NORMALIZATIONS, inner_split, outer_folds

from dualpatch import defaults

FOLD_SEEDS = (0, 1)
HOLDOUT = 0.2  # share of a fit's normal images held out of the bank for its stored threshold
#: the library's default banks: 10 % coresets, at most ``CORESET_ROWS`` rows a bank (with the cap
#: a 10 % fit costs about what the 1 % fits of the first published run did)
NORMAL_CORESET = defaults.NORMAL_CORESET
DEFECT_CORESET = defaults.DEFECT_CORESET
CORESET_ROWS = defaults.CORESET_ROWS
CORESET_METHOD = "greedy"


def distances(model, samples: list, batch: int = 32) -> dict[str, np.ndarray]:
    """Per-patch d_n, d_d (N, h, w) and the single bank's re-weighted score (N,) of ``samples``."""
    from dualpatch.scoring import reweighted_score

    dn, dd, rw = [], [], []
    for start in range(0, len(samples), batch):
        feats = model.image_features(samples[start : start + batch])
        n_dist, idx = model._nearest(model.memory_, feats)
        d_dist, _ = model._nearest(model.defect_memory_, feats)
        b, h, w, d = feats.shape
        rw.append(reweighted_score(n_dist, feats.reshape(b, h * w, d), idx, model.memory_.bank_))
        dn.append(n_dist)
        dd.append(d_dist)
    return {"dn": torch.cat(dn).numpy(), "dd": torch.cat(dd).numpy(), "rw": torch.cat(rw).numpy()}


def skip_unused_fit_work() -> None:
    """Two parts of a fit that these figures never read, skipped to save CPU: the anomaly-map
    display scale (200 training images scored) and the leave-image-out tau (32 images scored),
    which the held-out tau replaces, as ``threshold.calibrate`` does."""
    from dualpatch.models import banks

    banks.map_scale = lambda model, feats: 1.0
    banks.leave_image_out_level = lambda model, feats: (1.0, 0)


def fit_and_score(name: str, norm: str, train: list, sets: dict[str, list], out: Path) -> None:
    """Fit a dual model on ``train`` (bank on 80 % of its normals, the rest held out) and store
    the distances of the held-out normals and of every set in ``sets``."""
    from dualpatch.models import DualPatchCore
    from dualpatch.threshold import holdout_split

    if out.exists():
        return
    spec = DATASETS[name]
    normal = [s for s in train if s.label == 0]
    bank, held = holdout_split(normal, HOLDOUT, seed=0)
    model = DualPatchCore(image_size=spec["size"], coreset_ratio=NORMAL_CORESET,
                          defect_coreset=DEFECT_CORESET, coreset_rows=CORESET_ROWS,
                          normalization=norm,
                          cache_dir=spec["cache"], progress=False,
                          coreset_method=CORESET_METHOD)  # fmt: skip
    t0 = time.perf_counter()
    model.fit(bank, [s for s in train if s.label == 1])
    fit_s = time.perf_counter() - t0
    arrays, meta = {}, {"fit_seconds": round(fit_s, 1), "sets": {}}
    meta["skipped_at_fit"] = skip_unused_fit_work.__doc__.split(":")[1].strip()
    for set_name, samples in {"held": held, **sets}.items():
        d = distances(model, samples)
        for k, v in d.items():
            arrays[f"{set_name}.{k}"] = v
        arrays[f"{set_name}.label"] = np.array([s.label for s in samples])
        meta["sets"][set_name] = [s.id for s in samples]
    meta["score_seconds"] = round(time.perf_counter() - t0 - fit_s, 1)
    meta["bank_rows"] = int(model.memory_.bank_.shape[0])
    meta["defect_rows"] = int(model.defect_memory_.bank_.shape[0])
    meta["normal_bank_images"], meta["held_out_images"] = len(bank), len(held)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    out.with_suffix(".json").write_text(json.dumps(meta))
    os.replace(tmp, out)
    print(out.name, meta["fit_seconds"], meta["score_seconds"], flush=True)


def run_dataset(name: str, work: Path, norms, fold_seeds, defaults: bool = False) -> None:
    samples = pooled_samples(name)
    others = {o: pooled_samples(o) for o in DATASETS if o != name}
    grey = name != "bsdata"
    pasted = pasted_set(name, [s for s in samples if s.label == 0], others, work, grey)
    size = DATASETS[name]["size"]
    (work / name).mkdir(parents=True, exist_ok=True)
    if defaults:  # the defaults' selection: an inner split of every image of the dataset
        inner, val = inner_split(name, samples, seed=0)
        for norm in norms:
            sets = _sets(name, val, pasted, others, size, work, "all-inner", 2)
            fit_and_score(name, norm, inner, sets, work / name / norm / "all.inner.npz")
        return
    # the default normalisation for every fold first: a run cut short still has the main table
    for norm in norms:
        for fs in fold_seeds:
            for f, (train, test) in enumerate(outer_folds(name, samples, fs)):
                tag = f"r{fs}f{f}"
                (work / name / f"{tag}.split.json").write_text(
                    json.dumps({"train": [s.id for s in train], "test": [s.id for s in test]})
                )
                # the selection's validation set: an inner split of the outer training items only
                inner, val = inner_split(name, train, seed=fs)
                base = work / name / norm
                sets_outer = _sets(name, test, pasted, others, size, work, f"{tag}-outer", 1)
                sets_inner = _sets(name, val, pasted, others, size, work, f"{tag}-inner", 2)
                fit_and_score(name, norm, inner, sets_inner, base / f"{tag}.inner.npz")
                fit_and_score(name, norm, train, sets_outer, base / f"{tag}.outer.npz")


def _sets(name, evaluated, pasted, others, size, work, tag, seed) -> dict[str, list]:
    normals = [s for s in evaluated if s.label == 0]
    return {
        "test": evaluated,
        "foreign": foreign_set(normals, others, size, work / "foreign" / name / tag, seed),
        "unseen": [pasted[s.id] for s in normals if s.id in pasted],
    }


def main() -> None:
    torch.set_num_threads(1)
    skip_unused_fit_work()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--norms", nargs="+", default=list(NORMALIZATIONS))
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=list(FOLD_SEEDS))
    parser.add_argument("--work", default="runs/safety")
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="Fit the defaults' selection: an inner split of all of each dataset.",
    )
    args = parser.parse_args()
    for name in args.datasets:
        record = {"command": "python " + " ".join(sys.argv), "started": time.time(),
                  "loadavg_before": os.getloadavg(), "cpus": os.cpu_count()}  # fmt: skip
        run_dataset(name, Path(args.work), args.norms, args.fold_seeds, args.defaults)
        record.update(finished=time.time(), loadavg_after=os.getloadavg())
        record["wall_seconds"] = round(record["finished"] - record["started"], 1)
        stem = "compute_run_defaults" if args.defaults else "compute_run"
        if (args.norms, args.fold_seeds) != (list(NORMALIZATIONS), list(FOLD_SEEDS)):
            stem += f"_{'-'.join(args.norms)}_seeds{'-'.join(map(str, args.fold_seeds))}"
        (Path(args.work) / name / f"{stem}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
