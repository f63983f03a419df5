"""What a result was computed with: package versions (saved in model.json) and the machine
(saved as a run's environment.json)."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

from dualpatch import __version__


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"dualpatch": __version__, "python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "safetensors", "efficientnet-lite-pytorch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def environment() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_free_memory() -> None:
    """Hand the allocator's free heap back to the system (glibc ``malloc_trim``; nothing
    elsewhere). After scoring, glibc keeps about 100 MiB of the batches' freed temporaries
    resident (measured on ``evaluate``), which then add to what the metrics allocate."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
