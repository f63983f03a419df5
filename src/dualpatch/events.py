"""Progress and run events: the library says what it is doing, a display decides how to show it.

The library emits events to the listeners subscribed in the current context: a stage of work
started, advanced or finished (``StageStarted``, ``StageAdvanced``, ``StageFinished``: features,
coreset, scoring, ...) and a run of an experiment started or finished (``RunStarted``,
``RunFinished``). Nobody parses log text. The CLI renders the events with rich
(``dualpatch.cli.progress``); a notebook that subscribes nothing gets tqdm bars (``TqdmRenderer``),
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
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StageEvent:
    """Stage ``name`` of ``total`` units; ``stage`` (unique per process) ties its events.

    ``total`` is None when the size is not known in advance (a download without a length);
    ``unit`` names the units ("B": bytes, which a display may scale to KiB/MiB), "" for items."""

    stage: int
    name: str
    total: int | None
    unit: str = field(default="", kw_only=True)


class StageStarted(StageEvent):
    """The stage began."""


class StageFinished(StageEvent):
    """The stage is done: every unit, an empty stage closed, or a stage closed early (an error,
    or the end of one whose total was not known)."""


@dataclass(frozen=True)
class StageAdvanced(StageEvent):
    """``n`` more units of the stage are done, ``done`` of ``total`` in all; ``note``: a short
    status to show beside the bar (a training loss), or empty."""

    n: int
    done: int
    note: str = field(default="", kw_only=True)


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


def stage(name: str, total: int | None, unit: str = "") -> Stage:
    """Start a stage of ``total`` units; returns ``advance(n)``, which reports ``n`` more done.

    The stage finishes once ``total`` units are done; ``advance(0)`` finishes an empty one, and
    ``advance.close()`` one that ends otherwise (``staged`` does it for you). With no listener
    subscribed the stage draws a tqdm bar (when stderr is a terminal)."""
    if not listening():
        return _DrawnStage(name, total, unit)
    return Stage(name, total, unit)


class Stage:
    """A started stage: call it with ``n`` to report ``n`` more units done (an ``Advance``)."""

    def __init__(self, name: str, total: int | None, unit: str = "") -> None:
        self.ident, self.name, self.total, self.unit = next(_STAGE_IDS), name, total, unit
        self.done, self.finished = 0, False
        emit(StageStarted(self.ident, name, total, unit=unit))

    def __call__(self, n: int, note: str = "") -> None:
        """``n`` more units done; ``note``: a status to show with them (e.g. ``loss=0.1234``)."""
        if self.finished:
            return
        self.done += n
        emit(StageAdvanced(self.ident, self.name, self.total, n, self.done, unit=self.unit,
                           note=note))  # fmt: skip
        if self.total is not None and self.done >= self.total:
            self.close()

    def close(self) -> None:
        """Finish the stage now, whether or not every unit is done (once; later calls: none)."""
        if not self.finished:
            self.finished = True
            emit(StageFinished(self.ident, self.name, self.total, unit=self.unit))


@contextlib.contextmanager
def staged(
    name: str, total: int | None, unit: str = "", done: int = 0, progress: bool = True
) -> Iterator[Advance]:
    """A stage for the ``with`` block: yields ``advance(n)``; the stage finishes when the block
    ends, even early (an error) or with a total not known in advance.

    ``done``: units done before (a resumed download starts its bar there); ``progress=False``:
    no stage at all."""
    if not progress:
        yield silent(name, total or 0)
        return
    advance = stage(name, total, unit)
    if done:
        advance(done)
    try:
        yield advance
    finally:
        advance.close()


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


def silent(name: str, total: int) -> Advance:
    """A stage nobody sees (``progress=False``)."""
    return lambda n, note="": None


#: an estimator's ``progress``: True (events; tqdm when nobody listens), False (none), or a
#: caller's own display ``(name, total) -> advance`` (the protocol before events, still taken)
Progress = bool | Callable[[str, int], Advance] | None


def open_stage(progress: Progress, name: str, total: int) -> Advance:
    """Start stage ``name`` as ``progress`` asks: an event stage, none, or the caller's display."""
    if callable(progress):
        return progress(name, total)
    return (stage if progress else silent)(name, total)


#: how tqdm shows a unit: bytes scaled to KiB, MiB, ... as a download bar does
_TQDM_UNITS: dict[str, dict[str, object]] = {
    "B": {"unit": "B", "unit_scale": True, "unit_divisor": 1024}
}


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

            units = _TQDM_UNITS.get(event.unit, {"unit": event.unit or "it"})
            options = {**units, **self.options}
            self._bars[event.stage] = tqdm(total=event.total, desc=event.name, **options)
        elif isinstance(event, StageAdvanced) and event.stage in self._bars:
            bar = self._bars[event.stage]
            if event.note:
                bar.set_postfix_str(event.note, refresh=False)  # type: ignore[attr-defined]
            bar.update(event.n)  # type: ignore[attr-defined]
        elif isinstance(event, StageFinished) and event.stage in self._bars:
            self._bars.pop(event.stage).close()  # type: ignore[attr-defined]


class _DrawnStage(Stage):
    """A stage drawn by its own tqdm bar: nobody listens where it was started."""

    def __init__(self, name: str, total: int | None, unit: str = "") -> None:
        self.renderer = TqdmRenderer()
        with subscribe(self.renderer):
            super().__init__(name, total, unit)

    def __call__(self, n: int, note: str = "") -> None:
        with subscribe(self.renderer):  # the stage's own bar, even if the caller's context changed
            super().__call__(n, note)

    def close(self) -> None:
        with subscribe(self.renderer):
            super().close()
