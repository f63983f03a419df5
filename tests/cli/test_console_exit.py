"""The console entry point (``console``): after a successful command it runs the Python exit
handlers, flushes the streams and leaves with ``os._exit`` (skipping the native libraries'
teardown, evaluate's peak RSS); a failing command exits the usual way."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading

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
    monkeypatch.setattr(threading, "_shutdown", lambda: done.append("threads"))
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: done.append("exit handlers"))
    return done


def test_success_runs_the_exit_handlers_then_exits_zero(monkeypatch, calls):
    monkeypatch.setattr(cli_main, "main", lambda: calls.append("main"))
    with pytest.raises(Exited):
        cli_main.console()
    assert calls == ["main", "threads", "exit handlers", ("os._exit", 0)]


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


def test_a_thread_still_writing_finishes_and_an_idle_pool_stops(tmp_path):
    """As a normal exit does, ``console`` lets threading shut down first: a thread that is not a
    daemon (a writer still saving) finishes, and an idle thread pool (a runtime's) is stopped
    rather than waited for forever. A real process: the shutdown cannot be undone in this one."""
    target = tmp_path / "written.txt"
    code = f"""
import threading, time
from concurrent.futures import ThreadPoolExecutor
from dualpatch.cli import main as cli_main

def slow_writer():
    time.sleep(0.5)
    open({str(target)!r}, "w").write("done")

def command():
    ThreadPoolExecutor(1).submit(lambda: None).result()  # an idle worker stays behind
    threading.Thread(target=slow_writer).start()

cli_main.main = command
cli_main.console()
"""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "done"


@pytest.mark.parametrize("runtime", ["torch", "onnx", "openvino"])
def test_a_real_predict_exits_with_its_runtime_threads_idle(
    tmp_path, runtime, fitted_dual, tiny_test, run_cli
):
    """A runtime may leave an idle thread pool behind (OpenVINO's): ``console`` must stop it, as
    a normal exit does, not wait for it forever (a hang found by benchmarks/line_speed.py)."""
    pytest.importorskip({"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}[runtime])
    model = tmp_path / "model"
    fitted_dual.save(model)
    files = [s.image_path for s in tiny_test[:2]]
    r = run_cli("predict", *files, "--model", model, "--runtime", runtime, "--out",
                tmp_path / "out", timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "scores.csv").is_file()
