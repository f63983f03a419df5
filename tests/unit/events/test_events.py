"""The progress and event channel: events reach subscribers in order; the CLI renders them with
rich, a notebook with tqdm; the library itself never loads rich."""

from __future__ import annotations

import io
import subprocess
import sys
import threading

from dualpatch import events


def test_stage_events_reach_the_subscriber_in_order():
    seen: list[events.Event] = []
    with events.subscribe(seen.append):
        advance = events.stage("features", 3)
        advance(1)
        advance(2)
        advance(5)  # after the end: nothing more
    ident = seen[0].stage
    assert seen == [
        events.StageStarted(ident, "features", 3),
        events.StageAdvanced(ident, "features", 3, n=1, done=1),
        events.StageAdvanced(ident, "features", 3, n=2, done=3),
        events.StageFinished(ident, "features", 3),
    ]


def test_an_empty_stage_finishes_on_advance_zero():
    seen: list[events.Event] = []
    with events.subscribe(seen.append):
        advance = events.stage("coreset", 0)
        advance(0)
    assert [type(e) for e in seen] == [
        events.StageStarted, events.StageAdvanced, events.StageFinished
    ]  # fmt: skip


def test_stages_have_their_own_ids_and_listeners_nest():
    outer: list[events.Event] = []
    inner: list[events.Event] = []
    with events.subscribe(outer.append):
        first = events.stage("a", 1)
        with events.subscribe(inner.append):
            second = events.stage("b", 1)
            events.emit(events.RunStarted("dual", 0, 2))
        first(1)
        second(1)
    assert outer[0].stage != outer[1].stage
    assert [type(e).__name__ for e in inner] == ["StageStarted", "RunStarted"]
    assert len(outer) == 7 and not events.listening()


def test_listeners_are_per_thread_context():
    seen: list[events.Event] = []

    def elsewhere():
        events.emit(events.RunStarted("other thread", 0, 1))

    with events.subscribe(seen.append):
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        events.emit(events.RunFinished("here", 0, 1))
    assert seen == [events.RunFinished("here", 0, 1)]


def test_without_a_listener_a_stage_draws_tqdm_and_emits_nothing(capsys):
    advance = events.stage("scoring", 2)  # a tqdm bar (disabled: stderr is not a terminal)
    advance(2)
    assert not events.listening()


def test_tqdm_renderer_follows_the_stage():
    from tqdm import tqdm

    drawn = io.StringIO()
    renderer = events.TqdmRenderer(file=drawn, disable=False)
    with events.subscribe(renderer):
        advance = events.stage("features", 4)
        (bar,) = renderer._bars.values()
        assert isinstance(bar, tqdm) and bar.total == 4
        advance(3)
        assert bar.n == 3
        advance(1)
    assert renderer._bars == {} and "features" in drawn.getvalue()


def test_rich_renderer_draws_runs_and_removes_finished_stages():
    from rich.console import Console

    from dualpatch.cli.progress import RichRenderer, progress_bars

    console = Console(file=io.StringIO(), force_terminal=False, width=100)
    with progress_bars(console) as progress, events.subscribe(RichRenderer(progress)):
        events.emit(events.RunStarted("single", 0, 2))
        advance = events.stage("features", 2)
        assert [t.description for t in progress.tasks] == ["runs (single)", "  features"]
        advance(2)
        assert [t.description for t in progress.tasks] == ["runs (single)"]
        events.emit(events.RunFinished("single", 0, 2))
        events.emit(events.RunStarted("dual", 1, 2))
        events.emit(events.RunFinished("dual", 1, 2))
        (runs,) = progress.tasks
        assert (runs.description, runs.completed, runs.total) == ("runs (dual)", 2, 2)
    assert "runs (dual)" in console.file.getvalue()


def test_rich_renderer_shows_byte_stages_as_sizes():
    from rich.console import Console

    from dualpatch.cli.progress import RichRenderer, progress_bars

    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress_bars(console) as progress, events.subscribe(RichRenderer(progress)):
        files = events.stage("files", 3)
        download = events.stage("downloading k.zip", 3_000_000, unit="B")
        files(1)
        download(1_500_000)
        progress.refresh()
        shown = console.file.getvalue()
    assert "1.5/3.0 MB" in shown
    assert "1/3" in shown and "1500000/3000000" not in shown


def test_rich_stays_in_the_cli_layer():
    """The event module and the estimators' progress never load rich (the CLI's renderer does)."""
    code = (
        "import sys\n"
        "from dualpatch import events\n"
        "with events.subscribe(lambda e: None):\n"
        "    events.stage('x', 1)(1)\n"
        "sys.exit('rich' in sys.modules or 'typer' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import dualpatch.cli.progress as cli_progress

    assert "rich" in (cli_progress.__doc__ or "")
    source = open(events.__file__).read()
    assert "import rich" not in source and "from rich" not in source


def test_track_reports_each_item_and_closes_empty_stages():
    seen: list[events.Event] = []
    with events.subscribe(seen.append):
        assert list(events.track("abc", "letters")) == ["a", "b", "c"]
        assert list(events.track(iter(()), "nothing", total=0)) == []
        assert list(events.track([1, 2], "quiet", progress=False)) == [1, 2]
    names = [(type(e).__name__, e.name) for e in seen]
    assert names == [("StageStarted", "letters")] + [("StageAdvanced", "letters")] * 3 + [
        ("StageFinished", "letters"), ("StageStarted", "nothing"),
        ("StageAdvanced", "nothing"), ("StageFinished", "nothing"),
    ]  # fmt: skip


def test_cli_rendering_draws_nothing_when_piped_unless_asked(capsys):
    from dualpatch.cli.progress import rendering

    with rendering():  # stderr is not a terminal here: no bars, and no tqdm fallback either
        assert events.listening()
        events.stage("features", 1)(1)
    assert capsys.readouterr().err == ""
    with rendering(always=True):  # what `dualpatch run` leaves in its log: the final bars
        events.emit(events.RunStarted("dual", 0, 1))
        events.emit(events.RunFinished("dual", 0, 1))
    assert "runs (dual)" in capsys.readouterr().err
    with rendering(always=True):  # no event, no display at all
        pass
    assert capsys.readouterr().err == ""
