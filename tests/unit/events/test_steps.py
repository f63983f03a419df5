"""``events.steps``: a stage for loops that may stop early or have no known total (the DDPM's
training runs until its step count or its time budget), with a status note (the loss)."""

from __future__ import annotations

import io

import pytest

from dualpatch import events


def test_steps_emit_notes_and_finish_when_the_block_ends():
    seen: list[events.Event] = []
    with events.subscribe(seen.append), events.steps("train", None) as tick:
        tick(1, note="loss=0.5000")
        tick(2)
    ident = seen[0].stage
    assert seen == [
        events.StageStarted(ident, "train", None),
        events.StageAdvanced(ident, "train", None, n=1, done=1, note="loss=0.5000"),
        events.StageAdvanced(ident, "train", None, n=2, done=3),
        events.StageFinished(ident, "train", None),
    ]


def test_steps_finish_even_when_the_loop_stops_early_or_fails():
    seen: list[events.Event] = []
    with events.subscribe(seen.append), pytest.raises(KeyboardInterrupt):
        with events.steps("train", 100) as tick:
            tick()
            raise KeyboardInterrupt
    assert isinstance(seen[-1], events.StageFinished) and seen[-1].total == 100
    assert seen[-2].done == 1


def test_steps_without_progress_emit_nothing():
    seen: list[events.Event] = []
    with events.subscribe(seen.append), events.steps("train", 3, progress=False) as tick:
        tick(1, note="loss=1")
    assert seen == []


def test_the_tqdm_renderer_shows_the_note_and_an_unknown_total():
    out = io.StringIO()
    renderer = events.TqdmRenderer(file=out, disable=False, mininterval=0, leave=True)
    with events.subscribe(renderer), events.steps("train", None) as tick:
        tick(1, note="loss=0.1234")
        tick(1, note="loss=0.0042")
    text = out.getvalue()
    assert "train: 1it" in text and "loss=0.1234" in text
    assert text.rstrip().endswith("loss=0.0042]")
