"""Every command's ``--help`` fits 80 columns whole: no option name or help text cut with "…"
(rich's table cut ``--threshold-holdout`` to ``--threshold-hol…``), no line wider than 80."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from dualpatch.cli.main import app


def _paths(command=None, path: tuple[str, ...] = ()):
    command = command or typer.main.get_command(app)
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _paths(sub, (*path, name))


@pytest.mark.parametrize("path", list(_paths()), ids=lambda p: " ".join(p) or "dualpatch")
def test_help_fits_80_columns(path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "…" not in result.output
    # click cuts a command's summary to one line with "..." after a word ("[ARGS]..." is usage)
    # ("paths..." and "images..." are variadic arguments, not cut text)
    assert re.findall(r"[a-z,]\.\.\.", re.sub(r"\b(paths|images)\.\.\.", "", result.output)) == []
    assert [line for line in lines if len(line) > 80] == []
    if path == ("fit",):
        assert "--threshold-holdout" in result.output
    if path == ():  # each command's summary whole, wrapped, not cut
        text = " ".join(result.output.split())
        assert "write metrics.json (fractions), scores.csv and the anomaly maps" in text
