"""Crop folders on KolektorSDD: how many crops ``dualpatch data crops`` writes for the default
training split, and whether ``fit --crops`` on that folder scores like ``--defects crop``.

Runs the command line itself (data crops, fit twice, evaluate twice) and writes
``benchmarks/results/crops_kolektorsdd.json``.

    python benchmarks/crops_kolektorsdd.py --data ../shared/data/kolektorsdd
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli(*args: object) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dualpatch.cli", *map(str, args)], check=True)
    return round(time.perf_counter() - t0, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/kolektorsdd")
    parser.add_argument("--out", default="benchmarks/results/crops_kolektorsdd.json")
    args = parser.parse_args()

    from dualpatch.data import KolektorSDD
    from dualpatch.data.crops import connected_regions
    from dualpatch.fileio import write_json

    train = KolektorSDD(args.data, "train")
    regions = sum(len(connected_regions(s.mask((320, 128)))) for s in train.defective())
    # crops follow the masks' native regions since issue 24: both counts are recorded
    native = sum(len(connected_regions(s.mask())) for s in train.defective())
    data = ["--dataset", "kolektorsdd", "--data", args.data]
    result: dict = {"load_before": os.getloadavg()[0], "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["seconds"]["data crops"] = cli("data", "crops", *data, "--out", tmp / "crops")
        with (tmp / "crops" / "crops.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        scores, metrics = {}, {}
        for name, how in (
            ("defects-crop", ["--defects", "crop"]),
            ("from-crops", ["--crops", tmp / "crops"]),
        ):
            model, res = tmp / name, tmp / f"{name}-results"
            result["seconds"][f"fit {name}"] = cli(
                "fit", *data, "--bank", "dual", *how, "--out", model
            )
            result["seconds"][f"evaluate {name}"] = cli(
                "evaluate", "--model", model, *data, "--out", res
            )
            scores[name] = (res / "scores.csv").read_text()
            metrics[name] = json.loads((res / "metrics.json").read_text())
        same_tensors = (tmp / "from-crops" / "model.safetensors").read_bytes() == (
            tmp / "defects-crop" / "model.safetensors"
        ).read_bytes()
    result.update(
        defective_training_images=len(train.defective()),
        connected_regions_at_320x128=regions,
        connected_regions_native=native,
        crops_written=len(rows),
        images_with_crops=len({r["source_image"] for r in rows}),
        test_images_scored=len(scores["from-crops"].splitlines()) - 1,
        scores_csv_identical=scores["from-crops"] == scores["defects-crop"],
        model_tensors_identical=same_tensors,
        metrics=metrics,
        load_after=os.getloadavg()[0],
    )
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"}, indent=2))


if __name__ == "__main__":
    main()
