"""The command line's display of the library's events (``dualpatch.events``) with rich.

Stages (features, coreset, scoring, ...) show as indented bars that disappear when done; an
experiment's runs show as one ``runs`` bar naming the run in progress."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

from dualpatch import events

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class RichRenderer:
    """An ``events`` listener drawing on a rich ``Progress``."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._stages: dict[int, TaskID] = {}
        self._runs: TaskID | None = None

    def __call__(self, event: events.Event) -> None:
        p = self.progress
        if isinstance(event, events.StageStarted):
            self._stages[event.stage] = p.add_task(
                f"  {event.name}", total=event.total, unit=event.unit
            )
        elif isinstance(event, events.StageAdvanced) and event.stage in self._stages:
            p.update(self._stages[event.stage], completed=event.done)
        elif isinstance(event, events.StageFinished) and event.stage in self._stages:
            p.remove_task(self._stages.pop(event.stage))
        elif isinstance(event, events.RunStarted):
            if self._runs is None:
                self._runs = p.add_task("runs", total=event.total)
            p.update(self._runs, description=f"runs ({event.name})")
        elif isinstance(event, events.RunFinished) and self._runs is not None:
            p.update(self._runs, completed=event.index + 1)


class LogLineRenderer:
    """An ``events`` listener for a stderr that is not a terminal (a log file, a pipe): a long
    stage gets one plain line every ``every`` seconds and one when it ends; a short one none.

    Bars would fill a log with carriage returns, and silence made a 15-minute DDPM training look
    hung; a stage quicker than ``every`` prints nothing, so a command that fails early still
    prints its error as its only line."""

    def __init__(
        self, stream: TextIO, every: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream, self.every, self.clock = stream, every, clock
        self._started: dict[int, float] = {}  # stage -> its start
        self._shown: dict[int, float] = {}  # stage -> its last line, once it has had one

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.StageStarted):
            self._started[event.stage] = self.clock()
        elif isinstance(event, events.StageAdvanced) and event.stage in self._started:
            now = self.clock()
            if now - self._shown.get(event.stage, self._started[event.stage]) >= self.every:
                self._shown[event.stage] = now
                self._line(event.name, now - self._started[event.stage], _count(event), event.note)
        elif isinstance(event, events.StageFinished) and event.stage in self._started:
            elapsed = self.clock() - self._started.pop(event.stage)
            if self._shown.pop(event.stage, None) is not None:
                self._line(event.name, elapsed, "done")

    def _line(self, name: str, elapsed: float, what: str, note: str = "") -> None:
        minutes, seconds = divmod(int(elapsed), 60)
        note = f" {note}" if note else ""
        print(f"{name.strip()}: {what}{note} ({minutes}:{seconds:02d})", file=self.stream,
              flush=True)  # fmt: skip


def _count(event: events.StageAdvanced) -> str:
    """``done/total (pct%)``, sizes for a stage counted in bytes, ``done`` without a total."""
    from rich.filesize import decimal

    show = decimal if event.unit == "B" else str
    if event.total is None:
        return show(event.done)
    share = f" ({100 * event.done / event.total:.0f}%)" if event.total else ""
    return f"{show(event.done)}/{show(event.total)}{share}"


def progress_bars(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    class CountColumn(ProgressColumn):
        """``done/total`` for items; sizes (``12.3/45.6 MB``) for a stage counted in bytes."""

        def __init__(self) -> None:
            super().__init__()
            self.items, self.sizes = MofNCompleteColumn(), DownloadColumn()

        def render(self, task):  # noqa: ANN001, ANN201 (rich's signature)
            column = self.sizes if task.fields.get("unit") == "B" else self.items
            return column.render(task)

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        CountColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class LoggerStream:
    """A text stream that hands each complete line to ``log.info``: ``LogLineRenderer``'s lines
    in ``run.log``."""

    def __init__(self, log: logging.Logger) -> None:
        self.log, self._part = log, ""

    def write(self, text: str) -> int:
        *lines, self._part = (self._part + text).split("\n")
        if log_ready(self.log):
            for line in lines:
                self.log.info("%s", line)
        return len(text)

    def flush(self) -> None:
        pass


def log_ready(log: logging.Logger) -> bool:
    """Whether ``log``'s files can be opened now: ``run.log`` appears with the results folder,
    after the data opened; a line before that is dropped, never a logging traceback."""
    from pathlib import Path

    files = [h.baseFilename for h in log.handlers if isinstance(h, logging.FileHandler)]
    return all(Path(f).parent.is_dir() for f in files)


@contextlib.contextmanager
def rendering(always: bool = False, log: logging.Logger | None = None) -> Iterator[None]:
    """Show the library's events as rich bars on stderr while the block runs.

    When stderr is not a terminal (a log file, a pipe) a long stage writes a plain line every
    30 s instead (``LogLineRenderer``), so that error lines stay lines of their own; ``always``
    adds the final bars at the end (``run`` leaves them in its log). ``log``: the same 30-second
    lines go to this logger too (``run.log``). Either way no tqdm bar is drawn: the events have
    a listener."""
    from rich.console import Console

    console = Console(stderr=True)
    with contextlib.ExitStack() as listeners:
        if log is not None:
            listeners.enter_context(events.subscribe(LogLineRenderer(LoggerStream(log))))
        if not console.is_terminal:
            listeners.enter_context(events.subscribe(LogLineRenderer(sys.stderr)))
        if always or console.is_terminal:
            listeners.enter_context(_bars(console))
        yield


@contextlib.contextmanager
def _bars(console: Console) -> Iterator[None]:
    """Rich bars on ``console`` for the events of the block (drawn from the first event on)."""
    progress = progress_bars(console)
    renderer = RichRenderer(progress)

    def draw(event: events.Event) -> None:
        if not progress.live.is_started:  # the display appears with the first event only
            progress.start()
        renderer(event)

    try:
        with events.subscribe(draw):
            yield
    finally:
        if progress.live.is_started:
            progress.stop()
