"""``fileio.output_lock``: one writer per --out across processes, re-entrant within one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dualpatch.errors import DataError
from dualpatch.fileio import lock_path, output_lock

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_another_process_holding_the_lock_is_refused_in_one_line(tmp_path):
    out = tmp_path / "model"
    lock = lock_path(out)
    assert lock == tmp_path / ".model.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataError) as info, output_lock(out):
            pass
        message = str(info.value)
        assert "\n" not in message and str(out) in message and str(lock) in message
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out):  # free again once its holder is gone
        assert lock.is_file()
    assert not lock.exists()


def test_the_lock_is_re_entrant_in_one_process(tmp_path):
    out = tmp_path / "model"
    with output_lock(out), output_lock(out):
        assert lock_path(out).is_file()
    assert not lock_path(out).exists()
