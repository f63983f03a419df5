"""``dualpatch predict`` at 1k and 10k images: wall time and peak RSS of the whole process.

Streaming output should keep memory flat and time linear in the number of images. Each size runs
``dualpatch predict FOLDER --model M --out O`` in its own process; peak RSS is that process's
``ru_maxrss`` (from ``os.wait4``). Images are small (``--size``, default 128x64, generated
textures) so that 10,000 fit a shared 2-core machine; the per-image cost, not the image size, is
what the scaling is about.

    python benchmarks/predict_scaling.py --counts 1 1000 10000 --size 64 32
    python benchmarks/predict_scaling.py --counts 200 2000

A first count of 1 measures the fixed start-up cost (interpreter, torch, model), which the
summary subtracts to give the per-image cost at each size.

Writes ``benchmarks/results/predict_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "predict_scaling.json"


def texture(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gray = rng.normal(0.5, 0.08, (h, w)) + 0.15 * ((np.arange(w) // 6) % 2)[None, :]
    if seed % 10 == 0:  # every tenth image gets a dark spot
        y, x = rng.integers(4, h - 8), rng.integers(4, w - 8)
        gray[y : y + 4, x : x + 4] -= 0.4
    return (np.clip(gray, 0, 1) * 255).astype(np.uint8)


def make_images(folder: Path, n: int, h: int, w: int, first_seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(texture(first_seed + i, h, w)).save(folder / f"{i:06d}.png")
    return folder


FIT = """
import sys
from pathlib import Path
from dualpatch import PatchCore
from dualpatch.data import Sample
train, out, h, w = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
samples = [Sample(p.stem, p, None, 0) for p in sorted(train.iterdir())]
model = PatchCore(image_size=(h, w), coreset_min=200, progress=False, cache_dir=None)
model.fit(samples).save(out)
"""


def fit_model(work: Path, h: int, w: int, env: dict) -> Path:
    """A single-bank model on 20 generated images, fit by the same source tree that predicts."""
    train = make_images(work / "train", 20, h, w, first_seed=10**6 + 1)
    out = work / "model"
    subprocess.run([sys.executable, "-c", FIT, str(train), str(out), str(h), str(w)], env=env,
                   check=True)  # fmt: skip
    return out


def run_predict(images: Path, model: Path, out: Path, env: dict) -> dict:
    cmd = [sys.executable, "-m", "dualpatch.cli", "predict", str(images), "--model", str(model),
           "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict failed:\n{err}")
    rows = len((out / "scores.csv").read_text().splitlines()) - 1
    return {
        "images": rows,
        "wall_seconds": round(wall, 2),
        "seconds_per_1000_images": round(wall / rows * 1000, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--size", type=int, nargs=2, default=[128, 64], metavar=("H", "W"))
    parser.add_argument("--json", type=Path, default=RESULTS, help="Where to write the figures.")
    parser.add_argument(
        "--src", type=Path, default=ROOT / "src",
        help="dualpatch source tree that runs predict (e.g. an older commit's, as a reference).",
    )  # fmt: skip
    args = parser.parse_args()
    h, w = args.size
    env = dict(os.environ, DUALPATCH_CACHE="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(args.src))  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="predict-scaling-"))
    try:
        model = fit_model(work, h, w, env)
        runs = []
        for n in args.counts:
            images = make_images(work / f"images-{n}", n, h, w)
            result = run_predict(images, model, work / f"out-{n}", env)
            print(json.dumps(result), flush=True)
            runs.append(result)
            shutil.rmtree(images)
            shutil.rmtree(work / f"out-{n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # with a 1-image run first, its wall time is the fixed cost (interpreter, torch, model load):
    # the others' time beyond it is the per-image cost, which must be flat for linear time
    base = runs[0]["wall_seconds"] if runs[0]["images"] == 1 else 0.0
    for r in runs:
        if r["images"] > 1 and base:
            r["seconds_per_1000_images_beyond_startup"] = round(
                (r["wall_seconds"] - base) / r["images"] * 1000, 2
            )
    scaled = [r for r in runs if r["images"] > 1]
    first, last = scaled[0], scaled[-1]
    summary = {
        "command": "python benchmarks/predict_scaling.py "
        + " ".join(["--counts", *map(str, args.counts), "--size", str(h), str(w)])
        + ("" if args.json == RESULTS else f" --json {args.json}")
        + ("" if args.src == ROOT / "src" else f" --src {args.src}"),
        "image_size_hw": [h, w],
        "backbone": "efficientnet_lite0",
        "torch_threads": 1,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "runs": runs,
        "startup_seconds": base or None,
        "time_ratio": round(last["wall_seconds"] / first["wall_seconds"], 2),
        "time_ratio_beyond_startup": round(
            (last["wall_seconds"] - base) / (first["wall_seconds"] - base), 2
        ),
        "count_ratio": round(last["images"] / first["images"], 2),
        "rss_ratio": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))


if __name__ == "__main__":
    main()
