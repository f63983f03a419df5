"""A piped command's display: plain lines for long stages only (``LogLineRenderer``)."""

from __future__ import annotations

import io

from dualpatch import events
from dualpatch.cli.progress import LogLineRenderer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_stage_gets_a_line_every_interval_and_one_when_done():
    clock, log = Clock(), io.StringIO()
    with events.subscribe(LogLineRenderer(log, every=30, clock=clock)):
        advance = events.stage("DDPM training", 100)
        clock.now = 10
        advance(10, note="loss=0.5")  # 10 s in: too soon for a line
        clock.now = 31
        advance(20, note="loss=0.4")
        clock.now = 45
        advance(10)  # 14 s after the last line
        clock.now = 62
        advance(60, note="loss=0.3")  # the last units: a line, then the stage ends
    assert log.getvalue().splitlines() == [
        "DDPM training: 30/100 (30%) loss=0.4 (0:31)",
        "DDPM training: 100/100 (100%) loss=0.3 (1:02)",
        "DDPM training: done (1:02)",
    ]


def test_a_short_stage_prints_nothing_so_an_early_error_stays_the_only_line():
    clock, log = Clock(), io.StringIO()
    with events.subscribe(LogLineRenderer(log, every=30, clock=clock)):
        advance = events.stage("features", 3)
        clock.now = 29
        advance(3)
    assert log.getvalue() == ""


def test_byte_stages_and_stages_without_a_total_read_as_sizes_and_counts():
    clock, log = Clock(), io.StringIO()
    with events.subscribe(LogLineRenderer(log, every=5, clock=clock)):
        with events.staged("download", 3_000_000, unit="B") as advance:
            clock.now = 6
            advance(1_500_000)
        with events.staged("sampling", None) as advance:
            clock.now = 12
            advance(7)
    lines = log.getvalue().splitlines()
    assert lines[0] == "download: 1.5 MB/3.0 MB (50%) (0:06)"
    assert lines[1] == "download: done (0:06)"
    assert lines[2] == "sampling: 7 (0:06)"


def test_cli_rendering_uses_log_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    import dualpatch.cli.progress as cli_progress

    class Eager(LogLineRenderer):
        def __init__(self, stream) -> None:
            super().__init__(stream, every=0)

    monkeypatch.setattr(cli_progress, "LogLineRenderer", Eager)
    with cli_progress.rendering():  # capsys: stderr is not a terminal
        events.stage("coreset", 2)(2)
    assert capsys.readouterr().err.splitlines()[0].startswith("coreset: 2/2 (100%)")
