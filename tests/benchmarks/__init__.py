"""Tests of the benchmark scripts' choosers and record-keeping (benchmarks/*.py)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.support.common import REPO_ROOT


def load_script(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
