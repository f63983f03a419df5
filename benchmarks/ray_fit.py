"""``fit`` with its features extracted on Ray (``distributed_fit.fit_on_ray``) against the plain
fit, on the same generated images: wall time by phase, and whether the banks are bit-identical.

This shows the mechanism and its overhead on one machine, not a speed-up: on the shared 2-core
box the actors share the cores the plain fit uses, and Ray's start-up and its object store come on
top. The speed-up needs more cores than one process can use (a cluster: ``ray start --head``,
then ``--ray ADDRESS``).

Each fit runs in its own process (``--child``); the Ray fit starts a local Ray instance of
``--actors`` CPUs first (timed apart), then extracts into a fresh feature cache, then fits from it.
The machine's busy CPU seconds over each fit are recorded with ``uptime``: Ray's workers are not
children the driver waits for, so their CPU time cannot be split from other jobs'.

    benchmarks/timed.sh python benchmarks/ray_fit.py --counts 500 2000 --actors 2

Writes ``benchmarks/results/ray_fit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ray_fit.json"
sys.path.insert(0, str(ROOT / "benchmarks"))

from line_speed import busy_cpu_s, uptime  # noqa: E402
from predict_scaling import make_images  # noqa: E402


def child(args) -> None:
    """One fit (plain or on Ray) of the images in ``args.images``; prints its phases as JSON."""
    from safetensors.torch import save_file

    from dualpatch import PatchCore
    from dualpatch.data import Sample

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    samples = [Sample(p.stem, p, None, 0) for p in sorted(Path(args.images).iterdir())]
    params = dict(image_size=tuple(args.size), coreset_ratio=0.01, progress=False)
    phases = {}
    t0 = time.perf_counter()
    if args.child == "plain":
        model = PatchCore(**params).fit(samples)
    else:
        import ray

        from dualpatch.cluster.fit import extract_to_cache

        ray.init(num_cpus=args.actors, include_dashboard=False, log_to_driver=False)
        phases["ray_start_s"] = time.perf_counter() - t0
        model = PatchCore(**params, cache_dir=str(Path(args.bank).parent / "cache"))
        t1 = time.perf_counter()
        extract_to_cache(model, samples, actors=args.actors)
        phases["extract_on_ray_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        model.fit(samples)
        phases["fit_from_cache_s"] = time.perf_counter() - t1
        ray.shutdown()
    phases["total_s"] = time.perf_counter() - t0
    save_file({"bank": model.memory_.bank_.contiguous()}, args.bank)
    print(json.dumps({k: round(v, 2) for k, v in phases.items()}))


def run_fit(kind: str, images: Path, bank: Path, args, threads: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--images", str(images), "--bank", str(bank),
           "--size", *map(str, args.size), "--actors", str(args.actors),
           "--threads", str(threads)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    load, busy0, t0 = uptime(), busy_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{kind} fit failed:\n{proc.stderr[-3000:]}")
    phases = json.loads(proc.stdout.strip().splitlines()[-1])
    label = "1 per actor" if kind == "ray" else threads or "default"
    return {"torch_threads": label, "process_wall_s": round(wall, 2), **phases,
            "machine_busy_cpu_s": round(busy_cpu_s() - busy0, 1),
            "uptime_before": load, "uptime_after": uptime()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--size", type=int, nargs=2, default=[128, 64], metavar=("H", "W"))
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--child", choices=["plain", "ray"])
    ap.add_argument("--images")
    ap.add_argument("--bank")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads of a plain fit (0: default)"
    )
    args = ap.parse_args()
    if args.child:
        return child(args)
    from safetensors.torch import load_file

    rows = []
    with tempfile.TemporaryDirectory(prefix="ray-fit-") as tmp:
        for n in args.counts:
            work = Path(tmp) / str(n)
            images = make_images(work / "images", n, *args.size)
            on_ray = run_fit("ray", images, work / "ray.safetensors", args)
            row: dict = {"images": n, "ray": on_ray}
            # each actor runs one torch thread: a plain fit with one thread extracts the same
            # bits; with more threads the convolutions sum in another order (rounding differs)
            for threads in (1, 0):
                name = f"plain_{threads or 'default'}_threads"
                row[name] = run_fit("plain", images, work / f"{name}.safetensors", args, threads)
                a = load_file(work / f"{name}.safetensors")["bank"]
                b = load_file(work / "ray.safetensors")["bank"]
                row[f"bank_identical_to_{name}"] = a.shape == b.shape and bool((a == b).all())
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "benchmarks/timed.sh python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "size_hw": args.size, "actors": args.actors, "coreset_ratio": 0.01,
        "note": "2 shared cores: the mechanism and its overhead, not a speed-up",
        "rows": rows,
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
