"""The console entry point (``console``): after a successful command it runs the Python exit
handlers, flushes the streams and leaves with ``os._exit`` (skipping the native libraries'
teardown, evaluate's peak RSS); a failing command exits the usual way."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys

import pytest

from dualpatch.cli import main as cli_main
from tests.support.common import REPO_ROOT


class Exited(Exception):
    pass


@pytest.fixture
def calls(monkeypatch):
    """What ``console`` did, in order, with ``os._exit`` and the exit handlers stubbed (the real
    ones would end or tear down the test process)."""
    done: list = []

    def fake_exit(code):
        done.append(("os._exit", code))
        raise Exited

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: done.append("exit handlers"))
    return done


def test_success_runs_the_exit_handlers_then_exits_zero(monkeypatch, calls):
    monkeypatch.setattr(cli_main, "main", lambda: calls.append("main"))
    with pytest.raises(Exited):
        cli_main.console()
    assert calls == ["main", "exit handlers", ("os._exit", 0)]


def test_a_failure_exits_the_usual_way(monkeypatch, calls):
    def failing():
        calls.append("main")
        sys.exit(1)

    monkeypatch.setattr(cli_main, "main", failing)
    with pytest.raises(SystemExit) as exc:
        cli_main.console()
    assert exc.value.code == 1 and calls == ["main"]


@pytest.mark.parametrize("args,code", [(["fit", "--help"], 0), (["fit", "--no-such-option"], 2)])
def test_the_real_process_keeps_its_output_and_status(args, code):
    """``python -m dualpatch.cli``: all of the output arrives through a pipe, with the status."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "dualpatch.cli", *args], env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == code
    if code == 0:
        assert r.stdout.startswith("Usage: ") and r.stderr == ""
        assert r.stdout.endswith("--help                          Show this message and exit.\n")
    else:
        assert r.stderr.startswith("error: ")


def test_a_thread_still_writing_finishes_before_the_exit(monkeypatch, calls, tmp_path):
    """As a normal exit does, ``console`` waits for threads that are not daemons (a writer still
    saving) before the exit handlers and ``os._exit``: nothing is cut off half-written."""
    import threading
    import time

    target = tmp_path / "written.txt"

    def slow_writer():
        time.sleep(0.3)
        target.write_text("done")
        calls.append("writer")

    def command():
        threading.Thread(target=slow_writer).start()
        calls.append("main")

    monkeypatch.setattr(cli_main, "main", command)
    with pytest.raises(Exited):
        cli_main.console()
    assert calls == ["main", "writer", "exit handlers", ("os._exit", 0)]
    assert target.read_text() == "done"
