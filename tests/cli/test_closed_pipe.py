"""A closed pipe ends quietly: ``dualpatch run --help | head`` printed "error: Broken pipe"."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.common import REPO_ROOT


@pytest.mark.parametrize("args", [["run", "--help"], ["fit", "--help"]])
def test_a_reader_that_goes_away_gets_no_error_line(args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "COLUMNS": "80"}
    proc = subprocess.Popen([sys.executable, "-m", "dualpatch.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == ""
    assert proc.returncode == 141
