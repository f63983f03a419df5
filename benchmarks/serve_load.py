"""Bounded load test of ``dualpatch serve`` on loopback: throughput and p50/p99 latency.

Starts the real server (subprocess, 127.0.0.1, a free port), sends KolektorSDD test images as raw
JPEG bodies with httpx at concurrency 1, 4 and 16 while the queue limit is above the concurrency
(no errors expected), then at concurrency 16 against ``--max-queue 4`` (clean 503s expected).

    python benchmarks/serve_load.py --model models/dual --data ../shared/data/kolektorsdd \
        [--requests 2000] [--runtime torch openvino]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from line_speed import busy_cpu_s  # this folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, runtime: str, threads: int, max_queue: int, extra: list[str]):
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "dualpatch.cli", "serve", "--model", model, "--port", str(port)]
    cmd += ["--runtime", runtime, "--threads", str(threads), "--max-queue", str(max_queue), *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read())
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("server did not start")


async def load(url: str, bodies: list[bytes], n: int, concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    rejected: list[float] = []
    statuses: Counter = Counter()
    retry_after: Counter = Counter()
    next_index = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker():
            for i in next_index:
                t0 = time.perf_counter()
                r = await client.post(
                    f"{url}/v1/inspect",
                    content=bodies[i % len(bodies)],
                    headers={"Content-Type": "image/jpeg"},
                )
                dt = 1000 * (time.perf_counter() - t0)
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    latencies.append(dt)
                elif r.status_code == 503:
                    rejected.append(dt)
                    retry_after[r.headers.get("Retry-After")] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    out = {
        "concurrency": concurrency,
        "requests": n,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "wall_s": round(wall, 2),
        "throughput_ok_per_s": round(len(latencies) / wall, 2),
        "latency_ok_ms_p50": round(float(np.percentile(lat, 50)), 1),
        "latency_ok_ms_p99": round(float(np.percentile(lat, 99)), 1),
    }
    if rejected:
        out["latency_503_ms_p50"] = round(float(np.percentile(rejected, 50)), 1)
        out["latency_503_ms_p99"] = round(float(np.percentile(rejected, 99)), 1)
        out["retry_after_headers"] = dict(retry_after)
    return out


def own_cpu_s(server_pid: int) -> float:
    """CPU seconds of this client process and the server process so far."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    ticks = Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    return me.ru_utime + me.ru_stime + sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK")


def measured(proc, url: str, bodies: list[bytes], n: int, concurrency: int) -> dict:
    """One load level, with the share of the machine that OTHER processes used meanwhile."""
    busy0, own0, t0 = busy_cpu_s(), own_cpu_s(proc.pid), time.perf_counter()
    r = asyncio.run(load(url, bodies, n, concurrency))
    wall = time.perf_counter() - t0
    foreign = busy_cpu_s() - busy0 - (own_cpu_s(proc.pid) - own0)
    r["foreign_cpu_fraction"] = round(max(0.0, foreign) / (wall * (os.cpu_count() or 1)), 3)
    return r


def run_runtime(args, runtime: str, bodies: list[bytes], extra: list[str]) -> dict:
    import json

    result: dict = {"runtime": runtime, "within_limits": []}
    proc, url = start(args.model, runtime, args.threads, 32, extra)
    try:
        for c in (1, 4, 16):
            r = measured(proc, url, bodies, args.requests, c)
            r["max_queue"] = 32
            result["within_limits"].append(r)
            print(runtime, json.dumps(r), flush=True)
    finally:
        proc.terminate()
        proc.wait()
    proc, url = start(args.model, runtime, args.threads, 4, extra)
    try:
        r = measured(proc, url, bodies, args.requests, 16)
        r["max_queue"] = 4
        result["above_limits"] = r
        print(runtime, json.dumps(r), flush=True)
    finally:
        proc.terminate()
        proc.wait()
    result["no_errors_within_limits"] = all(
        set(r["statuses"]) == {"200"} for r in result["within_limits"]
    )
    above = result["above_limits"]
    result["only_200_or_503_above_limits"] = set(above["statuses"]) <= {"200", "503"}
    result["every_503_has_retry_after"] = None not in above.get("retry_after_headers", {})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--data", default=os.environ.get("DUALPATCH_DATA", "../shared/data/kolektorsdd")
    )
    parser.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument("--runtime", nargs="+", default=["torch"], help="one or more runtimes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--threshold", help="if the model has no stored threshold")
    parser.add_argument("--out", default=str(HERE / "results" / "serve_load.json"))
    args = parser.parse_args()

    from dualpatch.data import KolektorSDD
    from dualpatch.fileio import write_json

    bodies = [Path(s.image_path).read_bytes() for s in KolektorSDD(args.data, "test")]
    extra = ["--threshold", args.threshold] if args.threshold else []
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    result: dict = {
        "command": " ".join([sys.executable, *sys.argv]),
        "model": args.model,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "requests_per_level": args.requests,
        "autogroup": Path("/proc/self/autogroup").read_text().strip(),
        "uptime_start": uptime(),
        "runtimes": {},
    }
    for runtime in args.runtime:
        result["runtimes"][runtime] = run_runtime(args, runtime, bodies, extra)
    result["uptime_end"] = uptime()
    write_json(args.out, result)


if __name__ == "__main__":
    main()
