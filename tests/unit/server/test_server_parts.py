"""Parts of the inspection server without a socket: the upload byte budget, the body deadline,
the log's rate limit and the threshold read from ``model.json``."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

pytest.importorskip("starlette")

from dualpatch.errors import ModelFileError  # noqa: E402
from dualpatch.serving.guard import RateLimit  # noqa: E402
from dualpatch.serving.server import BadRequest, BodyBudget, model_info, read_body  # noqa: E402


def run(coro):
    """``asyncio.run`` on a thread of its own: pytest-playwright's sync API keeps an event loop
    running on the main thread for the rest of a session that ran a browser test."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class FakeRequest:
    """What ``read_body`` uses of a Starlette request: headers and a chunk stream."""

    def __init__(self, chunks: list[bytes], pause: float = 0.0) -> None:
        self.headers, self.chunks, self.pause = {}, chunks, pause

    async def stream(self):
        for chunk in self.chunks:
            await asyncio.sleep(self.pause)
            yield chunk


def test_budget_refuses_past_its_limit_and_is_given_back():
    budget = BodyBudget(limit=10)
    body = run(read_body(FakeRequest([b"abcd", b"efgh"]), 100, 5, budget))
    assert body == b"abcdefgh" and budget.held == 0
    budget.held = 6  # another upload is arriving
    with pytest.raises(BadRequest) as refused:
        run(read_body(FakeRequest([b"abcd", b"efgh"]), 100, 5, budget))
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
    assert budget.held == 6  # what this request took is given back


def test_slow_body_gets_408():
    with pytest.raises(BadRequest) as late:
        run(read_body(FakeRequest([b"a"] * 10, pause=0.05), 100, 0.2))
    assert late.value.status == 408 and late.value.headers["Connection"] == "close"


def test_rate_limit_lets_a_burst_through_then_counts():
    limit = RateLimit(burst=3, total=100, window=60)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("dualpatch.serve", logging.WARNING, __file__, 1, msg, None, None)

    passed = [limit.filter(record("closed %s")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    limit.start -= 61  # a new window
    later = record("other")
    assert limit.filter(later) and "7 log lines left out" in later.getMessage()


@pytest.mark.parametrize("stored", [math.nan, math.inf, "high", True])
def test_stored_threshold_must_be_a_finite_number(fitted_single, tmp_path, stored):
    from tests.support.model_files import edit_card

    fitted_single.save(tmp_path)
    edit_card(tmp_path, lambda meta: meta.update(threshold=stored))
    # model.json is read by the card alone, which names the field it refuses
    with pytest.raises(ModelFileError, match="threshold"):
        model_info(tmp_path, None)


def test_no_stored_threshold_means_verdicts_off_unless_given(fitted_single, tmp_path):
    assert getattr(fitted_single, "threshold_", None) is None
    fitted_single.save(tmp_path)
    info = model_info(tmp_path, None)
    assert info["threshold"] is None and info["threshold_source"] is None
    given = model_info(tmp_path, 1.5)
    assert given["threshold"] == 1.5 and given["threshold_source"] == "--threshold"
