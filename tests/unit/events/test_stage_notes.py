"""A stage's advances may carry a note (the DDPM's training loss), shown beside its bar; a stage
whose total is not known finishes when its ``staged`` block ends."""

from __future__ import annotations

import io

from dualpatch import events


def test_notes_travel_with_the_advances_and_the_block_finishes_the_stage():
    seen: list[events.Event] = []
    with events.subscribe(seen.append), events.staged("train", None, "step") as advance:
        advance(1, note="loss=0.5000")
        advance(2)
    ident = seen[0].stage
    assert seen == [
        events.StageStarted(ident, "train", None, unit="step"),
        events.StageAdvanced(ident, "train", None, 1, 1, unit="step", note="loss=0.5000"),
        events.StageAdvanced(ident, "train", None, 2, 3, unit="step"),
        events.StageFinished(ident, "train", None, unit="step"),
    ]


def test_a_silent_stage_takes_notes_too():
    seen: list[events.Event] = []
    with events.subscribe(seen.append), events.staged("train", 3, progress=False) as advance:
        advance(1, note="loss=1")
    assert seen == []


def test_the_tqdm_renderer_shows_the_note_as_the_postfix():
    out = io.StringIO()
    renderer = events.TqdmRenderer(file=out, disable=False, mininterval=0, leave=True)
    with events.subscribe(renderer), events.staged("train", None, "step") as advance:
        advance(1, note="loss=0.1234")
        advance(1, note="loss=0.0042")
    text = out.getvalue()
    assert "train: 1step" in text and "loss=0.1234" in text
    assert text.rstrip().endswith("loss=0.0042]")
