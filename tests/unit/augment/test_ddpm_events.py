"""The DDPM reports its progress on the library's event channel (``dualpatch.events``), not with
bars of its own: loading, training (with the loss as a note; the total may be unknown) and
sampling."""

from __future__ import annotations

from dualpatch import events
from dualpatch.augment.ddpm import sample_ddpm, train_ddpm
from tests.support.ddpm import tiny


def _stages(seen: list[events.Event]) -> dict[str, list[events.Event]]:
    out: dict[str, list[events.Event]] = {}
    for e in seen:
        if isinstance(e, events.StageEvent):
            out.setdefault(e.name, []).append(e)
    return out


def test_training_and_sampling_progress_are_events(demo_train, tmp_path):
    seen: list[events.Event] = []
    with events.subscribe(seen.append):
        train_ddpm(demo_train, tmp_path / "m", steps=2, cfg=tiny())
        train_ddpm(demo_train, tmp_path / "m", steps=3, minutes=5.0, cfg=tiny())  # resumed
        sample_ddpm(tmp_path / "m", demo_train, 2, tmp_path / "out")
    stages = _stages(seen)
    trains = [e for e in stages["train"] if isinstance(e, events.StageStarted)]
    assert [e.total for e in trains] == [2, 1]  # the steps still to do in each call
    advanced = [e for e in stages["train"] if isinstance(e, events.StageAdvanced)]
    assert len(advanced) == 3 and all(e.note.startswith("loss=") for e in advanced)
    assert float(advanced[-1].note.split("=")[1]) >= 0
    assert sum(isinstance(e, events.StageFinished) for e in stages["train"]) == 2
    loads = [e for e in stages["load"] if isinstance(e, events.StageStarted)]
    assert loads and loads[0].total == len(demo_train)  # every demo image is a source
    sample = [type(e).__name__ for e in stages["sample"]]
    assert sample == ["StageStarted", "StageAdvanced", "StageAdvanced", "StageFinished"]


def test_training_without_a_step_count_has_no_total(demo_train, tmp_path):
    seen: list[events.Event] = []
    with events.subscribe(seen.append):
        train_ddpm(demo_train, tmp_path / "m", minutes=0.0, cfg=tiny())  # the budget is spent
    started = [e for e in _stages(seen)["train"] if isinstance(e, events.StageStarted)]
    assert [e.total for e in started] == [None]
    assert isinstance(_stages(seen)["train"][-1], events.StageFinished)


def test_no_progress_no_events(demo_train, tmp_path):
    seen: list[events.Event] = []
    with events.subscribe(seen.append):
        train_ddpm(demo_train, tmp_path / "m", steps=1, cfg=tiny(), progress=False)
        sample_ddpm(tmp_path / "m", demo_train, 1, tmp_path / "out", progress=False)
    assert not [e for e in seen if isinstance(e, events.StageEvent)]
