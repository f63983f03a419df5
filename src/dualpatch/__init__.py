"""dualpatch: PatchCore-style surface-defect detection with single and dual memory banks."""

import os

__version__ = "0.1.0"

# OpenMP threads that busy-wait between parallel regions (libgomp's default) fight over shared
# cores: on the 2 shared cores, batch-1 latency with 2 torch threads fell from 756-4326 ms to
# 152-158 ms with passive waiting (benchmarks/results/profile_scoring.json). It takes effect only
# if set before torch is first imported, and an explicit setting of the user's wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["DualPatchCore", "PatchCore", "Prediction", "__version__"]


def __getattr__(name: str):
    # torch is imported on first use of a model, so `dualpatch --help` and errors stay quick
    if name in ("DualPatchCore", "PatchCore"):
        from dualpatch import models

        return getattr(models, name)
    if name == "Prediction":  # numpy only: no torch import
        from dualpatch.prediction import Prediction

        return Prediction
    raise AttributeError(f"module 'dualpatch' has no attribute {name!r}")
