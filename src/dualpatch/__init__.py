"""dualpatch: PatchCore-style surface-defect detection with single and dual memory banks."""

__version__ = "0.1.0"

from .models import DualPatchCore, PatchCore, Prediction  # noqa: E402

__all__ = ["DualPatchCore", "PatchCore", "Prediction", "__version__"]
