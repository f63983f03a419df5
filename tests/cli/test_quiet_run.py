"""``run`` is quiet and clear: a repeated warning once with a count, no raw library warning, and
the 30-second stage lines in its log and in run.log."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np

from dualpatch import events
from dualpatch.cli.common import WarningDigest, library_of


def test_digest_shows_a_kind_once_and_counts_repeats(capsys, tmp_path):
    log = logging.getLogger("test-digest")
    log.handlers.clear()
    handler = logging.FileHandler(tmp_path / "run.log")
    log.addHandler(handler)
    with WarningDigest(log).active():
        for i in range(9):  # one complaint about nine mask files: one kind
            warnings.warn(f"/data/gt/{i}_mask.png: mask is not binary (3 distinct values)",
                          stacklevel=1)  # fmt: skip
        warnings.warn("a different one", stacklevel=1)
        np.mean(np.array([]))  # numpy: "Mean of empty slice"
        from sklearn.model_selection import StratifiedKFold

        list(StratifiedKFold(3).split(np.zeros(7), [0] * 6 + [1]))  # "least populated class"
    handler.close()
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["warning: /data/gt/0_mask.png: mask is not binary (3 distinct values)",
                       "warning: a different one"]  # fmt: skip
    assert err[2] == ("warning: 9 times in all (shown once): /data/gt/0_mask.png: mask is not "
                      "binary (3 distinct values)")  # fmt: skip
    assert err[3].startswith("warning: 3 warning(s) from numpy, scikit-learn (e.g. RuntimeWarning:")
    assert err[3].endswith("; all in run.log") and len(err) == 4
    text = (tmp_path / "run.log").read_text()
    assert "least populated class" in text and "Mean of empty slice" in text
    assert text.count("mask is not binary") == 9


def test_library_of_tells_ours_from_theirs():
    assert library_of("/venv/lib/python3.11/site-packages/sklearn/x.py", UserWarning) == (
        "scikit-learn"
    )
    assert library_of("/work/src/dualpatch/data/mvtec.py", UserWarning) is None
    assert library_of("/work/src/dualpatch/evaluation.py", RuntimeWarning) == "numpy"


def test_stage_lines_reach_the_run_log_and_a_piped_stderr(capsys, monkeypatch):
    import dualpatch.cli.progress as cli_progress
    from dualpatch.cli.progress import LogLineRenderer

    class Eager(LogLineRenderer):
        def __init__(self, stream) -> None:
            super().__init__(stream, every=0)

    monkeypatch.setattr(cli_progress, "LogLineRenderer", Eager)
    log = logging.getLogger("test-run-log")
    log.handlers.clear()
    log.setLevel(logging.INFO)
    buffer = io.StringIO()
    log.addHandler(logging.StreamHandler(buffer))
    with cli_progress.rendering(always=True, log=log):  # as run: stderr is a log file here
        events.stage("normal features", 2)(2)
    assert buffer.getvalue().splitlines()[0].startswith("normal features: 2/2 (100%)")
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("normal features: 2/2 (100%)")
