"""Progress and run events: the library says what it is doing, a display decides how to show it.

The library emits events to the listeners subscribed in the current context: a stage of work
started, advanced or finished (``StageStarted``, ``StageAdvanced``, ``StageFinished``: features,
coreset, scoring, ...) and a run of an experiment started or finished (``RunStarted``,
``RunFinished``). Nobody parses log text. The CLI renders the events with rich
(``dualpatch.cli_progress``); a notebook that subscribes nothing gets tqdm bars (``TqdmRenderer``),
which is what ``progress=True`` on the estimators means.

    from dualpatch import events
    with events.subscribe(print):          # any callable taking one event
        model.fit(train.normal())

Listeners live in a context variable, so threads and asyncio tasks see their own.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StageEvent:
    """Stage ``name`` of ``total`` units (None: not known in advance, e.g. a loop that runs until
    a time budget ends); ``stage`` (unique per process) ties its events."""

    stage: int
    name: str
    total: int | None


class StageStarted(StageEvent):
    """The stage began."""


class StageFinished(StageEvent):
    """The stage is done (every unit, or an empty stage closed)."""


@dataclass(frozen=True)
class StageAdvanced(StageEvent):
    """``n`` more units of the stage are done, ``done`` of ``total`` in all; ``note``: a short
    status to show beside the bar (a training loss), or empty."""

    n: int
    done: int
    note: str = ""


@dataclass(frozen=True)
class RunEvent:
    """Run ``name``, number ``index`` (0-based) of ``total`` in an experiment."""

    name: str
    index: int
    total: int


class RunStarted(RunEvent):
    """The run began."""


@dataclass(frozen=True)
class RunFinished(RunEvent):
    """The run finished (``skipped``: every result was there from before)."""

    skipped: bool = False


Event = StageStarted | StageAdvanced | StageFinished | RunStarted | RunFinished
Listener = Callable[[Event], None]
#: ``stage(name, total)`` returns ``advance(n)``: the estimators' ``progress`` protocol
Advance = Callable[[int], None]
#: ``steps``' ``tick(n=1, note="")``: ``n`` more units done, with an optional status note
Tick = Callable[..., None]

_LISTENERS: ContextVar[tuple[Listener, ...]] = ContextVar("dualpatch_listeners", default=())
_STAGE_IDS = itertools.count(1)


@contextlib.contextmanager
def subscribe(listener: Listener) -> Iterator[Listener]:
    """Send every event emitted inside the ``with`` block (in this context) to ``listener``."""
    token = _LISTENERS.set((*_LISTENERS.get(), listener))
    try:
        yield listener
    finally:
        _LISTENERS.reset(token)


def listening() -> bool:
    """Whether any listener is subscribed in the current context."""
    return bool(_LISTENERS.get())


def emit(event: Event) -> None:
    """Hand ``event`` to every subscribed listener, in the order they subscribed."""
    for listener in _LISTENERS.get():
        listener(event)


def stage(name: str, total: int) -> Advance:
    """Start a stage of ``total`` units; returns ``advance(n)``, which reports ``n`` more done.

    The stage finishes once ``total`` units are done; ``advance(0)`` finishes an empty one. With
    no listener subscribed the stage draws a tqdm bar (when stderr is a terminal)."""
    if not listening():
        return _tqdm_stage(name, total)
    ident = next(_STAGE_IDS)
    emit(StageStarted(ident, name, total))
    done, finished = 0, False

    def advance(n: int) -> None:
        nonlocal done, finished
        if finished:
            return
        done += n
        emit(StageAdvanced(ident, name, total, n, done))
        if done >= total:
            finished = True
            emit(StageFinished(ident, name, total))

    return advance


def track(
    items: Iterable[T], name: str, total: int | None = None, progress: bool = True
) -> Iterator[T]:
    """Yield ``items``, reporting each as one unit of stage ``name`` (as ``tqdm(items)`` would;
    ``progress=False``: no stage at all)."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    advance = stage(name, total) if progress else silent(name, total)
    if total == 0:
        advance(0)
    for item in items:
        yield item
        advance(1)


@contextlib.contextmanager
def steps(name: str, total: int | None = None, progress: bool = True) -> Iterator[Tick]:
    """A stage for a loop that may end before ``total`` units, or whose total is not known
    (None): yields ``tick(n=1, note="")``, and finishes the stage when the block ends, however
    it ends. ``note`` travels with the event (tqdm shows it as the bar's postfix). With no
    listener subscribed it draws a tqdm bar, as ``stage`` does; ``progress=False``: no stage."""
    if not progress:
        yield lambda n=1, note="": None
        return
    renderer = None if listening() else TqdmRenderer()
    with contextlib.ExitStack() as stack:
        if renderer is not None:
            stack.enter_context(subscribe(renderer))
        ident = next(_STAGE_IDS)
        emit(StageStarted(ident, name, total))
        done = 0

        def tick(n: int = 1, note: str = "") -> None:
            nonlocal done
            done += n
            emit(StageAdvanced(ident, name, total, n, done, note))

        try:
            yield tick
        finally:
            emit(StageFinished(ident, name, total))


def silent(name: str, total: int) -> Advance:
    """A stage nobody sees (``progress=False``)."""
    return lambda n: None


#: an estimator's ``progress``: True (events; tqdm when nobody listens), False (none), or a
#: caller's own display ``(name, total) -> advance`` (the protocol before events, still taken)
Progress = bool | Callable[[str, int], Advance] | None


def open_stage(progress: Progress, name: str, total: int) -> Advance:
    """Start stage ``name`` as ``progress`` asks: an event stage, none, or the caller's display."""
    if callable(progress):
        return progress(name, total)
    return (stage if progress else silent)(name, total)


class TqdmRenderer:
    """Draws each stage as a tqdm bar (``tqdm.auto``: a widget in a notebook); ignores runs.

    No bar when stderr is not a terminal, so error lines stay lines of their own; ``options`` go
    to ``tqdm`` (e.g. ``file=``, ``disable=False``)."""

    def __init__(self, **options: object) -> None:
        self._bars: dict[int, object] = {}
        self.options = {"leave": False, "dynamic_ncols": True, "disable": None, **options}

    def __call__(self, event: Event) -> None:
        if isinstance(event, StageStarted):
            from tqdm.auto import tqdm

            self._bars[event.stage] = tqdm(total=event.total, desc=event.name, **self.options)
        elif isinstance(event, StageAdvanced) and event.stage in self._bars:
            bar = self._bars[event.stage]
            if event.note:
                bar.set_postfix_str(event.note, refresh=False)  # type: ignore[attr-defined]
            bar.update(event.n)  # type: ignore[attr-defined]
        elif isinstance(event, StageFinished) and event.stage in self._bars:
            self._bars.pop(event.stage).close()  # type: ignore[attr-defined]


def _tqdm_stage(name: str, total: int) -> Advance:
    renderer = TqdmRenderer()
    with subscribe(renderer):
        advance = stage(name, total)

    def advance_drawn(n: int) -> None:
        with subscribe(renderer):  # the stage's own bar, even if the caller's context changed
            advance(n)

    return advance_drawn
