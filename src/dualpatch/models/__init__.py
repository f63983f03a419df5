"""The estimators: ``PatchCore`` (one normal bank) and ``DualPatchCore`` (normal + defect banks).

``patchcore`` and ``dual`` hold the estimators (params, fit, predict, save, load); ``banks`` and
``defect_features`` the work of a fit below them; ``persistence`` save/load with format versioning
and the class registry each estimator adds itself to; ``online`` learning on the line and
``versions`` versioned model folders. Importing this package imports both estimators, so every
class a model.json may name is registered before any load.
"""

from dualpatch.models.dual import DualPatchCore
from dualpatch.models.patchcore import PatchCore

__all__ = ["DualPatchCore", "PatchCore"]
