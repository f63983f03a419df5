"""Folder-scale scoring on Ray Data: a dataset of image paths, ``map_batches`` on actors that load
the model once each, results gathered in input order with each image exactly once.

Ray is optional (the ``scale`` extra) and imported only here, only when called. ``address``:
``"local"`` starts a Ray instance on this machine; ``"auto"`` joins the one ``ray start --head``
started here; anything else is a cluster address (``ray://host:10001`` or ``host:6379``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.errors import ConfigError, DataError


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Image files from files, folders, glob patterns and list files (``.txt``/``.lst``: one path
    a line, relative to the list's folder), in the order given."""
    from dualpatch.data.images import IMAGE_SUFFIXES, list_images

    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise DataError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file() and p.suffix.lower() in (".txt", ".lst"):
            for line in p.read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    f = p.parent / line.strip()
                    if not f.is_file():
                        raise DataError(f"{p}: lists {line.strip()}, which is not a file")
                    files.append(f)
        elif p.exists():
            files.append(p)
        elif glob.has_magic(str(p)):
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=True))
            found = [f for f in found if f.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise DataError(f"{p}: pattern matches no images")
            files += found
        else:
            raise DataError(f"{p}: file not found")
    return files


def die_once(marker: str | None) -> None:
    """Test hook of the actors: the calling worker dies (no clean-up) on its first batch, once
    per marker file, so that a test sees a lost actor's batch retried."""
    if marker and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)


class _Scorer:
    """A Ray Data actor: loads the model once, then scores batches of paths."""

    def __init__(self, model_dir: str, weights: str | None, exit_once: str | None = None):
        import torch

        from dualpatch.models import PatchCore

        torch.set_num_threads(1)
        self.model = PatchCore.load(model_dir, weights)
        self.model.progress = False
        self.exit_once = exit_once

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        die_once(self.exit_once)
        from dualpatch.data.base import Sample

        samples = [Sample(str(p), Path(str(p)), None, -1) for p in batch["path"]]
        pred = self.model.predict(samples)
        return {
            "index": batch["index"],
            "path": batch["path"],
            "score": pred.image_scores,
            "map": pred.anomaly_maps,
        }


#: Seconds to wait for a cluster address to accept a connection before Ray's own, much longer,
#: retries: a mistyped address fails in one line, not after minutes of warnings.
CONNECT_TIMEOUT = 5.0


def check_ray_address(address: str) -> None:
    """ConfigError unless ``address`` is ``auto`` or a ``[ray://]host:port`` that accepts a
    TCP connection."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--ray {address}: not local, auto or a cluster address like host:6379 "
            "or ray://host:10001"
        )
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--ray {address}: no Ray cluster answers there ({reason}); start one with "
            "`ray start --head`, or use --ray local"
        ) from exc


def ray_batches(
    model_dir: str | os.PathLike[str],
    files: list[Path],
    address: str = "local",
    actors: int = 1,
    batch_size: int = 8,
    weights: str | None = None,
    retries: int = 3,
    _exit_once: str | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(input indices, image scores, anomaly maps) of ``files``, batch by batch as Ray's actors
    finish them (in no set order). A lost actor is restarted and its batch retried (``retries``
    times); an index that comes back twice is given once."""
    if not files:
        raise DataError("no images to score")
    job = RayJob(address, actors, batch_size, retries)
    args = (str(Path(model_dir).resolve()), weights, _exit_once)
    for batch in job.map(_Scorer, args, files, "scored"):
        yield batch["index"], batch["score"], batch["map"]


class RayJob:
    """Where and how a Ray Data job runs: ``address`` (local, auto or a cluster), ``actors``
    (each builds its callable once), ``batch_size`` images a call, ``retries`` of a lost actor."""

    def __init__(self, address: str = "local", actors: int = 1, batch_size: int = 8,
                 retries: int = 3):  # fmt: skip
        self.address, self.actors = address, actors
        self.batch_size, self.retries = batch_size, retries

    def map(
        self, actor: type, args: tuple, files: list[Path], done: str
    ) -> Iterator[dict[str, np.ndarray]]:
        """``actor(*args)``'s output batches over ``files`` (each batch has ``index``: positions
        in ``files``), as they finish (in no set order), each index once; a DataError names an
        image the job never gave back (``done``: what the job does to an image, "scored")."""
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--ray needs Ray: pip install 'dualpatch[scale]'") from exc
        started = _start_ray(ray, self.address, self.actors)
        seen: set[int] = set()
        try:
            ds = ray.data.from_items(
                [{"index": i, "path": str(Path(f).resolve())} for i, f in enumerate(files)]
            )
            mapped = ds.map_batches(
                actor, fn_constructor_args=args, batch_size=self.batch_size,
                batch_format="numpy", concurrency=self.actors, num_cpus=1,
                max_restarts=self.retries, max_task_retries=self.retries,
            )  # fmt: skip
            for batch in mapped.iter_batches(batch_format="numpy", batch_size=None):
                fresh = [j for j, i in enumerate(batch["index"]) if int(i) not in seen]
                seen.update(int(batch["index"][j]) for j in fresh)
                if fresh:  # a retried batch whose first try also came back: given once
                    yield {k: v[fresh] for k, v in batch.items()}
        finally:
            if started:
                ray.shutdown()
        missing = [str(files[i]) for i in range(len(files)) if i not in seen]
        if missing:
            raise DataError(
                f"{missing[0]}: not {done} by the Ray job ({len(missing)} images missing)"
            )


def _start_ray(ray: Any, address: str, actors: int) -> bool:
    """Connect to (or start, for ``local``) Ray unless it already runs; returns whether it was
    started here (and so is shut down after the job)."""
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(num_cpus=max(1, actors), include_dashboard=False, log_to_driver=False)
        return True
    check_ray_address(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--ray {address}: {first}") from exc
    return True


def score_with_ray(model_dir, files: list[Path], **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(image scores (N,), anomaly maps (N, H, W)) of ``files`` in their order (``ray_batches``)."""
    scores: dict[int, float] = {}
    maps: dict[int, np.ndarray] = {}
    for index, batch_scores, batch_maps in ray_batches(model_dir, files, **kwargs):
        for i, s, m in zip(index, batch_scores, batch_maps, strict=True):
            scores[int(i)], maps[int(i)] = float(s), np.asarray(m, dtype=np.float32)
    order = range(len(files))
    return np.array([scores[i] for i in order]), np.stack([maps[i] for i in order])
