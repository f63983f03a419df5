"""Feature extraction for ``fit`` on Ray Data, the same way ``predict --ray`` scores
(``dualpatch.cluster.extract``): a dataset of image paths, ``map_batches`` on actors that load the
backbone once each.

The actors send each image's (h, w, D) patch features back; this process writes them into the
feature cache, each image once (a retried batch's second copy is dropped before it is written),
so the cache needs no filesystem shared with the workers and has one writer. The ordinary fit then
runs (in memory, or spilled under ``max_memory``) and reads every feature from the cache: the bank
and the scores are the plain fit's. The images (and a ``weights`` file) must be readable on the
workers at the same paths, as for ``predict --ray``.

Ray is optional (the ``scale`` extra) and imported only by ``distributed``, only when called.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.cluster.extract import RayJob, die_once
from dualpatch.data.base import Sample
from dualpatch.errors import ConfigError, DataError


class _FeatureActor:
    """A Ray Data actor: builds the backbone once, then extracts batches of image paths."""

    def __init__(self, settings: dict[str, Any], exit_once: str | None = None):
        import torch

        from dualpatch.models import PatchCore

        torch.set_num_threads(1)
        self.source = PatchCore(**settings, progress=False).feature_source()
        self.exit_once = exit_once

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        die_once(self.exit_once)
        samples = [Sample(str(p), Path(str(p)), None, -1) for p in batch["path"]]
        return {"index": batch["index"], "features": self.source.extract(samples).numpy()}


#: the estimator parameters that shape an image's features (``feature_cache.key_prefix``)
FEATURE_PARAMS = ("backbone", "image_size", "normalization", "weights")


def extract_to_cache(
    model: Any,
    samples: Iterable[Sample],
    address: str = "local",
    actors: int = 1,
    retries: int = 3,
    _exit_once: str | None = None,
) -> int:
    """Write the patch features of ``samples`` that ``model.cache_dir`` lacks into it, extracted
    on Ray (``address``: local, auto or a cluster; ``actors`` each hold the backbone once; a lost
    actor's batch is retried ``retries`` times). Progress: stage "features on Ray". Returns how
    many images Ray extracted (0: all were in the cache)."""
    from dualpatch.bank.feature_cache import entry_path, save_cached

    source = model.feature_source()  # the cache folder and keys the fit will read
    if not source.cache_dir:
        raise ConfigError("feature extraction on Ray writes to the feature cache: set cache_dir")
    cache = Path(source.cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{cache}: feature cache not writable ({exc.strerror})") from exc
    by_key = {source.key(s): s for s in samples}  # an image listed twice: extracted once
    if not by_key:
        raise DataError("no images to extract features from")
    # present entries are not read here: the fit checks every entry and recomputes a bad one
    todo = [(k, s) for k, s in by_key.items() if not entry_path(cache, k).is_file()]
    settings = {name: getattr(model, name) for name in FEATURE_PARAMS}
    if settings["weights"]:
        settings["weights"] = str(Path(settings["weights"]).resolve())
    job = RayJob(address, actors, source.batch_size, retries)
    advance = source.stage("features on Ray", len(by_key))
    advance(len(by_key) - len(todo))  # a stage with nothing left to do finishes here
    if not todo:
        return 0  # Ray is not even started
    try:
        files = [s.image_path for _, s in todo]
        for batch in job.map(_FeatureActor, (settings, _exit_once), files, "extracted"):
            for i, features in zip(batch["index"], batch["features"], strict=True):
                if not save_cached(entry_path(cache, todo[int(i)][0]), _tensor(features)):
                    raise DataError(f"{cache}: feature cache not writable; Ray's features are lost")
            advance(len(batch["index"]))
    finally:
        getattr(advance, "close", lambda: None)()  # an error ends the stage early
    return len(todo)


def _tensor(features: np.ndarray) -> Any:
    import torch

    # a copy: Ray's arrays are read-only
    return torch.tensor(np.asarray(features, dtype=np.float32))


@contextlib.contextmanager
def feature_cache_for(model: Any, scratch: str | Path | None = None) -> Iterator[Path]:
    """``model.cache_dir``, or (none set) a temporary one under ``scratch`` (default: the system's
    temporary folder) that ``model`` uses inside the ``with`` block and that is removed after."""
    if model.cache_dir:
        yield Path(model.cache_dir)
        return
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="dualpatch-ray-features-", dir=scratch))
    model.cache_dir = str(folder)
    try:
        yield folder
    finally:
        model.cache_dir = None
        shutil.rmtree(folder, ignore_errors=True)


def fit_on_ray(
    model: Any,
    normal: Iterable[Sample],
    defects: Iterable[Any] | None = None,
    *,
    address: str = "local",
    actors: int = 1,
    scratch: str | Path | None = None,
) -> Any:
    """``model.fit(normal[, defects])`` with the features of every whole image it reads (the
    normal images and the defect images; crops are cut and extracted here) extracted on Ray first
    (``extract_to_cache``). Without a ``cache_dir`` a temporary cache under ``scratch`` is used and
    removed. Returns the fitted model, equal to the plain fit's."""
    normal = list(normal)
    defects = None if defects is None else list(defects)
    whole = normal + [d for d in defects or () if isinstance(d, Sample)]
    with feature_cache_for(model, scratch):
        extract_to_cache(model, whole, address, actors)
        return model.fit(normal) if defects is None else model.fit(normal, defects)
