"""Which torch device a generator runs on: ``cpu``, ``cuda`` or ``cuda:N``, checked up front."""

from __future__ import annotations

import re

import torch

from dualpatch.errors import ConfigError


def resolve_device(device: str | None) -> torch.device:
    """The device named by ``device`` (default: cuda when available, else cpu), or ConfigError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = str(device).strip().lower()
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available here; use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    return torch.device(name)
