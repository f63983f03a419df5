"""The Ray instance of the distributed tests: local, 2 CPUs, started once for the package."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is the 'scale' extra")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def cli(monkeypatch):
    """Run ``dualpatch ARGS...`` in this process, where the package's Ray instance runs; the test
    fails unless it exits with status 0."""
    import warnings

    from dualpatch.cli.main import main

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it

    def run(*args) -> None:
        monkeypatch.setattr("sys.argv", ["dualpatch", *map(str, args)])
        with pytest.raises(SystemExit) as status:
            main()
            raise SystemExit(0)
        assert status.value.code in (0, None)

    return run
