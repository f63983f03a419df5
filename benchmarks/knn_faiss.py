"""k-NN search at scale: exact torch, faiss flat and faiss IVF at 1e5 and 1e6 bank rows, and the
image AUROC faiss-ivf costs on KolektorSDD. Writes benchmarks/results/knn_faiss.json.

Bank rows: real Lite0 patch features (152-d) of the generated 256x256 set cached by
benchmarks/coreset_scaling.py (682k patches), extended to 1e6 by jittered copies; queries are
patches of other images of the same set.

    PYTHONPATH=src python benchmarks/knn_faiss.py [--kolektor ../shared/data/kolektorsdd]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from dualpatch.bank.memory import MemoryBank
from dualpatch.bank.neighbours import knn

N_QUERIES = 4096


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def scale_table(cache: Path) -> list[dict]:
    files = sorted(glob.glob(str(cache / "*.safetensors")))
    feats = torch.cat([load_file(f)["features"].reshape(-1, 152) for f in files])
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(feats.shape[0], generator=gen)
    queries, pool = feats[perm[:N_QUERIES]], feats[perm[N_QUERIES:]]
    rows = []
    for size in (100_000, 1_000_000):
        bank = pool[:size]
        if bank.shape[0] < size:  # jittered copies of real rows make up the rest
            extra = pool[torch.randint(pool.shape[0], (size - bank.shape[0],), generator=gen)]
            bank = torch.cat([bank, extra + 0.05 * torch.randn(extra.shape, generator=gen)])
        (want_d, want_i), torch_s = timed(lambda b=bank: knn(queries, b, 1))
        row = {
            "bank_rows": size,
            "queries": N_QUERIES,
            "load": os.getloadavg(),
            "torch": {"search_s": round(torch_s, 3)},
        }
        for method in ("faiss-flat", "faiss-ivf"):
            mb = MemoryBank(knn=method)
            mb.bank_ = bank
            _, build_s = timed(lambda m=mb: m.query(queries[:1]))
            (got_d, got_i), search_s = timed(lambda m=mb: m.query(queries, 1))
            row[method] = {
                "build_s": round(build_s, 3),
                "search_s": round(search_s, 3),
                "recall_at_1": round(float((got_i == want_i).float().mean()), 4),
                "speedup_vs_torch": round(torch_s / search_s, 2),
                "median_distance_ratio": round(float((got_d / want_d.clamp_min(1e-9)).median()), 4),
            }
            print(size, method, row[method], flush=True)
        rows.append(row)
    return rows


def kolektor(root: Path, cache: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    from dualpatch import PatchCore
    from dualpatch.data import KolektorSDD

    train, test = KolektorSDD(root, "train"), KolektorSDD(root, "test")
    model = PatchCore(cache_dir=str(cache), progress=False).fit(train.normal())
    test_feats = model.image_features(list(test))
    labels = np.array([s.label for s in test])
    out = {
        "split": "KolektorSDD default split (kos01-33 train, kos34-50 test), single bank, "
        "1% coreset, Lite0 320x128, seed 0",
        "bank_rows": int(model.memory_.bank_.shape[0]),
    }
    for method in ("torch", "faiss-flat", "faiss-ivf"):
        model.memory_.knn = method
        dist, s = timed(lambda: model._nearest(model.memory_, test_feats)[0])
        scores = model._map(dist).amax(dim=(1, 2)).numpy()
        out[method] = {
            "image_auroc": round(float(roc_auc_score(labels, scores)), 4),
            "search_s": round(s, 3),
        }
        print(method, out[method], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="runs/bench-coreset/cache")
    ap.add_argument("--kolektor", default="../shared/data/kolektorsdd")
    ap.add_argument("--cache", default="runs/bench-knn/cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/knn_faiss.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    result = {
        "command": "PYTHONPATH=src python benchmarks/knn_faiss.py",
        "threads": args.threads,
        "ivf": "IndexIVFFlat, min(4 sqrt(M), M/39, 1024) lists, nprobe 8, k-means 10 iter",
        "scale": scale_table(Path(args.features)),
    }
    if Path(args.kolektor).is_dir():
        result["kolektorsdd"] = kolektor(Path(args.kolektor), Path(args.cache))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
