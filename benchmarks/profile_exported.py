"""Where the exported scorer's time goes: onnxruntime's own per-operator profile, per image.

Runs ``MODEL/model.onnx`` (``dualpatch export``) on random uint8 images at the model's size, at
batch 1 and batch 16, 2 intra-op threads, and sums onnxruntime's kernel times by operator type and
by node. The backbone is the ``Conv`` rows, the k-NN the ``Gemm``/``TopK`` rows, the map the
``MatMul`` rows (bilinear upsampling + blur as two matrix products).

    benchmarks/timed.sh python benchmarks/profile_exported.py --model models/dual-1pct [OTHER ...]

Several folders (e.g. the same model exported by an older version) are profiled in one run.

Writes ``benchmarks/results/profile_exported.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def profile(path: Path, batch: int, images: int, threads: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    x = np.random.default_rng(0).integers(0, 256, (batch, *shape[1:]), dtype=np.uint8)
    session.run(None, {"images": x})  # warm-up, profiled too: subtracted below by counting runs
    runs = max(1, images // batch)
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, {"images": x})
    wall = 1000 * (time.perf_counter() - t0) / (runs * batch)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"].removesuffix("_kernel_time")] += e["dur"]
    per_image = 1000 * (runs + 1) * batch  # us -> ms per image, warm-up run included in the sums
    return {
        "batch": batch,
        "wall_ms_per_image": round(wall, 2),
        "kernel_ms_per_image_by_op": {k: round(v / per_image, 3) for k, v in by_op.most_common()},
        "kernel_ms_per_image_top_nodes": {
            k: round(v / per_image, 3) for k, v in by_node.most_common(15)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", required=True, nargs="+", help="model folder(s) holding model.onnx"
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "profile_exported.json"))
    args = parser.parse_args()
    from dualpatch.fileio import write_json

    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "model": args.model,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "autogroup": Path("/proc/self/autogroup").read_text().strip(),
        "uptime_before": uptime(),
        "profiles": {
            model: [
                profile(Path(model) / "model.onnx", b, args.images, args.threads) for b in (1, 16)
            ]
            for model in args.model
        },
    }
    result["uptime_after"] = uptime()
    write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
