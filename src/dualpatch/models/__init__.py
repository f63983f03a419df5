"""The estimators: ``PatchCore`` (one normal bank) and ``DualPatchCore`` (normal + defect banks).

``patchcore`` and ``dual`` hold the estimators (params, fit, predict, save, load);
``defect_features`` the defect bank's features; ``persistence`` save/load with format versioning
and the class registry. The feature cache (``dualpatch.feature_cache``) and the progress display
(``dualpatch.progress``) sit below this package. Names are re-exported here for callers.
"""

from ..feature_cache import BANK_VERSION

# the cache readers under their names from before the split (tests check damaged entries with them)
from ..feature_cache import load_cached as _load_cached  # noqa: F401
from ..feature_cache import load_shared_bank as _load_shared_bank  # noqa: F401
from ..progress import Progress
from .defect_features import STRIDE, mask_cells
from .dual import DualPatchCore
from .patchcore import PatchCore, Prediction
from .persistence import FORMAT_VERSION, model_classes

__all__ = [
    "BANK_VERSION",
    "FORMAT_VERSION",
    "STRIDE",
    "DualPatchCore",
    "PatchCore",
    "Prediction",
    "Progress",
    "mask_cells",
    "model_classes",
]
