"""Train the KolektorSDD inpainting DDPM in stages and keep a copy of the model after each.

Resuming is exact (100 + 100 steps equal 200), so one run of stages 200, 400, ... gives the models
of a 200-step, 400-step, ... training, each with its wall-clock minutes. ``augment_fidelity.py
--ddpm-stages`` then measures fidelity against steps and minutes.
Results: ``benchmarks/results/ddpm_training.json``.

    python benchmarks/ddpm_training.py --data ../shared/data/kolektorsdd --stages 200 400 800
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kolektorsdd")
    parser.add_argument("--stages", nargs="+", type=int, default=[200, 400, 800])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/ddpm-training")
    parser.add_argument("--out", default=str(HERE / "results" / "ddpm_training.json"))
    args = parser.parse_args()

    import torch

    from dualpatch.augment.ddpm import train_ddpm
    from dualpatch.data import KolektorSDD
    from dualpatch.fileio import write_json

    torch.set_num_threads(1)  # 2 cores shared with other jobs
    train = KolektorSDD(args.data, "train")
    work = Path(args.work)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"stages": {}}
    minutes = sum(s["stage_minutes"] for s in results["stages"].values())
    for steps in args.stages:
        if str(steps) in results["stages"]:
            continue
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        train_ddpm(train, work / "model", steps=steps, seed=args.seed, progress=False)
        stage = (time.perf_counter() - t0) / 60
        minutes += stage
        shutil.copytree(work / "model", work / f"step-{steps:05d}", dirs_exist_ok=True)
        results["stages"][str(steps)] = {
            "model": str(work / f"step-{steps:05d}"),
            "stage_minutes": round(stage, 2),
            "total_minutes": round(minutes, 2),
            "load_at_start": load0,
            "load_at_end": os.getloadavg()[0],
        }
        write_json(out, results)
        print(f"step {steps}: {minutes:.1f} min in total", flush=True)


if __name__ == "__main__":
    main()
