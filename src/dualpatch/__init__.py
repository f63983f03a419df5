"""dualpatch: PatchCore-style surface-defect detection with single and dual memory banks."""

__version__ = "0.1.0"

__all__ = ["DualPatchCore", "PatchCore", "Prediction", "__version__"]


def __getattr__(name: str):
    # torch is imported on first use of a model, so `dualpatch --help` and errors stay quick
    if name in ("DualPatchCore", "PatchCore", "Prediction"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'dualpatch' has no attribute {name!r}")
