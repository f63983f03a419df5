"""The wall time of each search candidate of ``search_candidates.json`` (issue 25), beside the
accuracy that JSON measured: the torch search (``MemoryBank.query``) of one predict batch (8
images of 640 patches, KolektorSDD at 320x128) against a bank of each candidate's size, storage
and ranking dimension, on 2 threads.

Timing needs values of the right shape only (exact search does the same arithmetic whatever the
values), so the banks are seeded random rows of Lite0's 152 dimensions: the exact candidate at
KolektorSDD's 10 % bank (11,840 rows, as ``line_speed.json``'s model), the row budgets at their
budget. Each search runs 2 times to warm up, then ``--repeats`` times; the median is reported, with
the share of the CPU that other processes took meanwhile (above 10 %, nothing is written).

    python benchmarks/search_speed.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from line_speed import busy_cpu_s, run_header, uptime

HERE = Path(__file__).resolve().parent
#: KolektorSDD's 10 % normal bank of the default-split fit (line_speed.json's model), Lite0 width
EXACT_ROWS, DIM = 11_840, 152
#: one predict batch: 8 images of 640 patches
QUERIES = 8 * 640


def time_search(bank, queries: torch.Tensor, repeats: int) -> dict:
    for _ in range(2):
        bank.query(queries, 1)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        bank.query(queries, 1)
        times.append(time.perf_counter() - t0)
    return {"ms_per_image": round(1000 * float(np.median(times)) / 8, 3), "repeats": repeats}


def main() -> None:
    from dualpatch.bank.memory import MemoryBank
    from dualpatch.fileio import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--max-foreign-cpu", type=float, default=0.10)
    ap.add_argument("--out", default=str(HERE / "results" / "search_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    accuracy = json.loads((HERE / "results" / "search_candidates.json").read_text())
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(EXACT_ROWS, DIM, generator=gen)
    queries = torch.randn(QUERIES, DIM, generator=gen)
    result = {**run_header(), "threads": args.threads, "bank": f"{EXACT_ROWS} x {DIM} at most",
              "queries": QUERIES, "candidates": {}}  # fmt: skip
    busy, t0 = busy_cpu_s(), time.perf_counter()
    own0 = time.process_time()
    for name, settings in accuracy["candidates"].items():
        n = min(EXACT_ROWS, settings["coreset_rows"] or EXACT_ROWS)
        bank = MemoryBank(bank_dtype=settings["bank_dtype"], search_dim=settings["search_dim"])
        bank.bank_ = rows[:n]
        timing = time_search(bank, queries, args.repeats)
        kso = accuracy["datasets"]["kolektorsdd"]["outer"][name]
        result["candidates"][name] = {
            **settings,
            "bank_rows": n,
            **timing,
            "kolektorsdd_outer_image_auroc": kso["image_auroc"]["mean"],
            "picked": name == accuracy["pick"]["picked"],
        }
        print(name, json.dumps(result["candidates"][name]), flush=True)
    wall = time.perf_counter() - t0
    own = time.process_time() - own0
    foreign = max(0.0, busy_cpu_s() - busy - own) / (wall * (os.cpu_count() or 1))
    result["foreign_cpu_fraction"] = round(foreign, 3)
    result["uptime_end"] = uptime()
    exact = result["candidates"]["exact"]["ms_per_image"]
    for c in result["candidates"].values():
        c["speedup_over_exact"] = round(exact / c["ms_per_image"], 2)
    result["accuracy_source"] = "search_candidates.json (per dataset and fold, with intervals)"
    if foreign > args.max_foreign_cpu:
        raise SystemExit(f"other processes took {foreign:.0%} of the CPU; nothing written")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
