"""``dualpatch serve`` under abuse, on loopback: requests/s and latency of normal clients alone,
then the same while slow senders, half-open connections and decode bombs run alongside.

Starts the real server (subprocess, 127.0.0.1, a free port, default limits), sends test images as
raw bodies with httpx at a fixed concurrency, and probes ``/v1/health`` every 0.5 s. Every
attacker is bounded (a count or the normal run's end) and stops by itself. Records the machine's
load average and core count, the server's peak RSS and how many log lines it wrote. Each
attacker and the health probe run in a process of their own.

    python benchmarks/serve_abuse.py --model models/single --images ../shared/data/kolektorsdd \
        [--requests 400] [--concurrency 4] [--out benchmarks/results/serve_abuse.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SLOW_HEAD = (
    b"POST /v1/inspect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    b"Content-Length: 1000000\r\n\r\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, threads: int, log: Path) -> tuple[subprocess.Popen, int]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "dualpatch.cli", "serve", "--model", model, "--port", str(port)]
    cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stderr=log.open("w"), stdout=subprocess.DEVNULL)
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("server did not start")


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


async def normal_load(port: int, bodies: list[bytes], n: int, concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: Counter = Counter()
    todo = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker():
            for i in todo:
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        f"http://127.0.0.1:{port}/v1/inspect",
                        content=bodies[i % len(bodies)],
                        headers={"Content-Type": "application/octet-stream"},
                    )
                    statuses[r.status_code] += 1
                except httpx.TransportError as exc:
                    statuses[type(exc).__name__] += 1
                    errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    continue
                if r.status_code == 200:
                    latencies.append(1000 * (time.perf_counter() - t0))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "requests": n,
        "concurrency": concurrency,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": dict(errors),
        "requests_per_s": round(statuses[200] / wall, 2),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "wall_s": round(wall, 2),
    }


class Attack(mp.Process):
    """One attacker loop in a process of its own (as another machine would be, and without
    taking the normal client's GIL), until ``stop`` is set; ``stats`` counts what happened and
    comes back through ``results``."""

    def __init__(self, port: int, stop: Any) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.stats = port, stop, Counter()
        self.results: Any = mp.Queue()

    def run(self) -> None:
        self.attack()
        self.results.put(self.report())

    def report(self) -> dict:
        return dict(self.stats)

    def connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError as exc:
            self.stats[f"connect {type(exc).__name__}"] += 1
            return None


class SlowSenders(Attack):
    """``n`` connections that send a 1 MB body's headers and then one byte a second; each one the
    server closes is opened again."""

    def __init__(self, port: int, stop: Any, n: int = 32) -> None:
        super().__init__(port, stop)
        self.n = n

    def attack(self) -> None:
        socks: list[socket.socket] = []
        while not self.stop.is_set():
            while len(socks) < self.n and not self.stop.is_set():
                s = self.connect()
                if s is None:
                    break
                s.sendall(SLOW_HEAD)
                s.setblocking(False)
                socks.append(s)
                self.stats["opened"] += 1
            for s in list(socks):
                try:
                    s.send(b"\0")
                    if s.recv(4096):  # an answer (408, 503): the server let go of it
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    self.stats["closed by server"] += 1
                    socks.remove(s)
                    s.close()
            time.sleep(1)
        for s in socks:
            s.close()


class HalfOpen(Attack):
    """Connections opened as fast as they go and never written to, at most ``keep`` held at a
    time (the client's own file descriptors), up to ``total`` in all."""

    def __init__(self, port: int, stop: Any, keep: int = 400, total: int = 20000):
        super().__init__(port, stop)
        self.keep, self.total = keep, total

    def attack(self) -> None:
        held: list[socket.socket] = []
        while not self.stop.is_set() and self.stats["opened"] < self.total:
            s = self.connect()
            if s is None:
                time.sleep(0.05)
                continue
            held.append(s)
            self.stats["opened"] += 1
            if len(held) >= self.keep:
                held.pop(0).close()
        for s in held:
            s.close()


class DecodeBombs(Attack):
    """Small PNGs that are large to decode, one after another: an RGBA 6000x6000 (refused from
    its header) and a grey 6000x6000 (within the limits: decoded, resized and scored)."""

    def attack(self) -> None:
        import httpx

        bombs = {"rgba 36 MP": bomb_png("RGBA"), "grey 36 MP": bomb_png("L")}
        while not self.stop.is_set():
            for name, data in bombs.items():
                t0 = time.perf_counter()
                try:
                    r = httpx.post(
                        f"http://127.0.0.1:{self.port}/v1/inspect",
                        content=data,
                        headers={"Content-Type": "image/png"},
                        timeout=120,
                    )
                    self.stats[f"{name} {r.status_code}"] += 1
                except httpx.TransportError as exc:
                    self.stats[f"{name} {type(exc).__name__}"] += 1
                self.stats[f"{name} seconds"] += round(time.perf_counter() - t0, 3)


def bomb_png(mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (6000, 6000)).save(buf, format="PNG")
    return buf.getvalue()


class HealthProbe(Attack):
    def __init__(self, port: int, stop: Any) -> None:
        super().__init__(port, stop)
        self.latencies: list[float] = []

    def attack(self) -> None:
        import httpx

        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/v1/health", timeout=10)
                self.stats[str(r.status_code)] += 1
                self.latencies.append(1000 * (time.perf_counter() - t0))
            except httpx.TransportError as exc:
                self.stats[type(exc).__name__] += 1
            time.sleep(0.5)

    def report(self) -> dict:
        return {
            "statuses": dict(self.stats),
            "p50_ms": percentile(self.latencies, 50),
            "max_ms": round(max(self.latencies), 2) if self.latencies else None,
        }


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def phase(port: int, bodies: list[bytes], args, attackers: list[type]) -> dict:
    stop = mp.Event()
    running = [cls(port, stop) for cls in [HealthProbe, *attackers]]
    for t in running:
        t.start()
    time.sleep(2 if attackers else 0)  # let the attack build up first
    result = asyncio.run(normal_load(port, bodies, args.requests, args.concurrency))
    stop.set()
    reports = {type(t).__name__: t.results.get(timeout=120) for t in running}
    for t in running:
        t.join(timeout=30)
    result["health"] = reports.pop("HealthProbe")
    result["attackers"] = reports
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", type=Path, required=True, help="folder searched for *.jpg/*.png")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serve_abuse.json")
    args = ap.parse_args()
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    bodies = [p.read_bytes() for p in files if "label" not in p.name.lower()][:50]
    log = args.out.with_suffix(".server.log")
    load_before = os.getloadavg()
    proc, port = start(args.model, args.threads, log)
    try:
        normal = phase(port, bodies, args, [])
        abused = phase(port, bodies, args, [SlowSenders, HalfOpen, DecodeBombs])
        rss = peak_rss_mib(proc.pid)
    finally:
        t0 = time.perf_counter()
        proc.terminate()
        proc.wait(timeout=60)
        stop_s = round(time.perf_counter() - t0, 2)
    lines = log.read_text().splitlines()
    result = {
        "command": " ".join(["python", *sys.argv]),
        "note": "loopback, client and server on the same loaded machine: absolute figures are "
        "from a shared 2-core box with other jobs running (see load_average)",
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },  # fmt: skip
        "model": args.model,
        "images": len(bodies),
        "normal": normal,
        "under_abuse": abused,
        "server": {
            "peak_rss_mib": rss,
            "log_lines": len(lines),
            "sigterm_stop_s": stop_s,
            "tracebacks_in_log": sum("Traceback" in x for x in lines),
        },  # fmt: skip
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
