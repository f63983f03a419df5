"""The estimators: ``PatchCore`` (one normal bank) and ``DualPatchCore`` (normal + defect banks).

``patchcore`` and ``dual`` hold the estimators (params, fit, predict, save, load);
``defect_features`` the defect bank's features; ``persistence`` save/load with format versioning
and the class registry. The feature cache (``dualpatch.bank.feature_cache``) and the progress events
(``dualpatch.events``) sit below this package. Names are re-exported here for callers.
"""

from dualpatch.bank.feature_cache import BANK_VERSION

# the cache readers under their names from before the split (tests check damaged entries with them)
from dualpatch.bank.feature_cache import load_cached as _load_cached  # noqa: F401
from dualpatch.bank.feature_cache import load_shared_bank as _load_shared_bank  # noqa: F401
from dualpatch.events import Progress
from dualpatch.models.defect_features import STRIDE, mask_cells
from dualpatch.models.dual import DualPatchCore
from dualpatch.models.patchcore import PatchCore, Prediction
from dualpatch.models.persistence import FORMAT_VERSION, model_classes

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
