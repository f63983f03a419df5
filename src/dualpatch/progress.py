"""Progress display for the estimators' stages: a tqdm bar, nothing, or a caller's own display.

A stage is opened with ``(desc, total)`` and returns ``update(n)``, called with the number of
items just done. Kept apart from the estimators so that the display can change in one place.
"""

from __future__ import annotations

from collections.abc import Callable

#: a caller's display: ``(desc, total) -> update(n)``; None or False: none
Progress = Callable[[str, int], Callable[[int], None]] | None


def tqdm_progress(desc: str, total: int) -> Callable[[int], None]:
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal, so error lines stay lines of their own
    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None)

    def update(n: int) -> None:
        bar.update(n)
        if bar.n >= total:
            bar.close()

    return update


def silent(desc: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def stage(progress: bool | Progress, desc: str, total: int) -> Callable[[int], None]:
    """Open a stage on ``progress``: a callable display (e.g. the experiment runner's), True for
    a tqdm bar, False/None for none."""
    if callable(progress):
        return progress(desc, total)
    return (tqdm_progress if progress else silent)(desc, total)
