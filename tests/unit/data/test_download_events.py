"""The download's byte bar is a stage on the event channel: its events carry the byte totals
(also for a resumed download, a body without a length and a cut connection)."""

from __future__ import annotations

import io
import re
from http.server import BaseHTTPRequestHandler

import pytest

from dualpatch import events
from dualpatch.data import download as download_module
from dualpatch.data.download import download
from dualpatch.errors import DataError
from tests.support.http_server import local_server

PAYLOAD = bytes(range(256)) * 20  # 5,120 bytes: 6 blocks of the 1,000 set below


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD; honours ``Range: bytes=N-``; can leave out the length or cut the body."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv, start = self.server, 0
        if rng := self.headers.get("Range"):
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        if srv.send_length:
            self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start : srv.cut_at or None])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(download_module, "CHUNK", 1000)
    with local_server(_Handler, "k.zip", send_length=True, cut_at=None) as srv:
        yield srv


def _download(url, dest, progress=True) -> list[events.Event]:
    seen: list[events.Event] = []
    with events.subscribe(seen.append):
        download(url, dest, progress=progress)
    return seen


def _check_stage(seen: list[events.Event], total: int | None, first: int, last: int) -> None:
    """One stage: started, advanced from ``first`` to ``last`` bytes in order, finished."""
    started, *advanced, finished = seen
    assert isinstance(started, events.StageStarted) and isinstance(finished, events.StageFinished)
    assert all(isinstance(e, events.StageAdvanced) for e in advanced)
    assert {(e.stage, e.name, e.total, e.unit) for e in seen} == {
        (started.stage, "downloading k.zip", total, "B")
    }
    dones = [e.done for e in advanced]
    assert dones == sorted(dones) and dones[-1] == last
    assert dones[0] - advanced[0].n == 0 and advanced[0].n == first
    assert sum(e.n for e in advanced) == last


def test_download_emits_one_byte_stage_with_the_size(server, tmp_path):
    seen = _download(server.url, tmp_path / "k.zip")
    _check_stage(seen, len(PAYLOAD), 1000, len(PAYLOAD))
    assert len(seen) == 2 + 6  # started, a block of 1,000 five times and the last 120, finished
    assert (tmp_path / "k.zip").read_bytes() == PAYLOAD


def test_resumed_download_starts_at_the_bytes_already_there(server, tmp_path):
    (tmp_path / "k.zip.part").write_bytes(PAYLOAD[:3000])
    seen = _download(server.url, tmp_path / "k.zip")
    _check_stage(seen, len(PAYLOAD), 3000, len(PAYLOAD))  # the first advance: what was there
    assert (tmp_path / "k.zip").read_bytes() == PAYLOAD


def test_unknown_length_finishes_when_the_body_ends(server, tmp_path):
    server.send_length = False
    seen = _download(server.url, tmp_path / "k.zip")
    _check_stage(seen, None, 1000, len(PAYLOAD))


def test_cut_download_still_finishes_its_stage(server, tmp_path):
    server.cut_at = 2500
    seen: list[events.Event] = []
    with events.subscribe(seen.append), pytest.raises(DataError, match="interrupted at 2,500"):
        download(server.url, tmp_path / "k.zip")
    _check_stage(seen, len(PAYLOAD), 1000, 2500)


def test_no_progress_emits_nothing(server, tmp_path):
    assert _download(server.url, tmp_path / "k.zip", progress=False) == []
    assert (tmp_path / "k.zip").read_bytes() == PAYLOAD


def test_notebook_bar_counts_bytes_in_kib():
    from tqdm import tqdm

    drawn = io.StringIO()
    renderer = events.TqdmRenderer(file=drawn, disable=False)
    with events.subscribe(renderer), events.staged("downloading k.zip", 4096, "B", 2048) as advance:
        (bar,) = renderer._bars.values()
        assert isinstance(bar, tqdm) and (bar.total, bar.n, bar.unit) == (4096, 2048, "B")
        assert bar.unit_scale and bar.unit_divisor == 1024
        advance(1024)
        assert bar.n == 3072
    assert renderer._bars == {} and "/4.00k" in drawn.getvalue() and "B/s" in drawn.getvalue()
