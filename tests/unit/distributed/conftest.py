"""The Ray instance of the distributed tests: local, 2 CPUs, started once for the package."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is the 'scale' extra")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
