"""Every long step of a fit is a progress stage: after the normal coreset, the map scale (minutes
on a large bank) used to run with nothing shown."""

from __future__ import annotations

from dualpatch import PatchCore, events
from tests.support.common import tiny_params


def test_fit_reports_the_map_scale_as_a_stage(tiny_normal):
    seen = []
    with events.subscribe(seen.append):
        PatchCore(**{**tiny_params(), "progress": True}).fit(tiny_normal)
    started = [e.name for e in seen if isinstance(e, events.StageStarted)]
    finished = [e.name for e in seen if isinstance(e, events.StageFinished)]
    assert started[-1] == "map scale" and "map scale" in finished
    assert started.index("normal coreset") < started.index("map scale")
    done = [e.done for e in seen if isinstance(e, events.StageAdvanced) and e.name == "map scale"]
    assert done[-1] == len(tiny_normal)
