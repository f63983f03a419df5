"""Fill the feature cache for the safety suite's three datasets (one normalisation per process).

python benchmarks/suite_warm.py auto|imagenet
"""

from __future__ import annotations

import sys
import time

import torch

torch.set_num_threads(1)

from safety_data import DATASETS, pooled_samples  # noqa: E402

from dualpatch.bank.feature_cache import image_features  # noqa: E402
from dualpatch.models import PatchCore  # noqa: E402


def main() -> None:
    norm = sys.argv[1]
    for name, spec in DATASETS.items():
        samples = pooled_samples(name)
        model = PatchCore(image_size=spec["size"], normalization=norm,
                          cache_dir=spec["cache"], progress=False)  # fmt: skip
        t0, source = time.perf_counter(), model.feature_source()
        for start in range(0, len(samples), 64):
            feats = image_features(source, samples[start : start + 64], lambda n: None)
            print(name, norm, start + len(feats), "/", len(samples), tuple(feats.shape[1:]),
                  f"{time.perf_counter() - t0:.0f}s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
