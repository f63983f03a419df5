"""Fixtures of the bad-input tests: the command line run in this process, a tiny saved model."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """Run ``dualpatch ARGS...`` in this process: (exit status, stdout, stderr)."""
    from dualpatch.cli.main import main

    monkeypatch.setenv("DUALPATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DUALPATCH_OFFLINE", "1")
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["dualpatch", *map(str, args)])
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # every run shows its warnings, as a fresh process does
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = 0 if exc.code is None else exc.code
            except Exception as exc:  # a traceback for the user
                pytest.fail(f"main() let {type(exc).__name__} escape: {exc}")
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="module")
def model_dir(fitted_single, tmp_path_factory) -> Path:
    """A single-bank model at TINY size, saved once; tests copy it before damaging it."""
    return fitted_single.save(tmp_path_factory.mktemp("bad-input") / "model")
