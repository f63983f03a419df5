"""KSDD2 download (local HTTP server with Range), offline failure and safe extraction."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import stat
import tarfile
import time
import zipfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualpatch.cli.data import app
from dualpatch.data.download import download, download_ksdd2
from dualpatch.data.extract import Limits, safe_extract
from dualpatch.errors import DataError
from dualpatch.fileio import MARKER
from tests.support.http_server import local_server
from tests.support.ksdd2_fixture import COPY_PAIR, make_ksdd2_zip

runner = CliRunner()


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> bytes:
    return make_ksdd2_zip(tmp_path_factory.mktemp("zip") / "ksdd2.zip").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.payload``; honours ``Range: bytes=N-`` and can cut a body short once."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        data, rng = srv.payload, self.headers.get("Range")
        srv.ranges.append(rng)
        start = 0
        if rng and srv.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if srv.cut_after is not None:  # simulate a dropped connection mid-transfer
            body, srv.cut_after = body[: srv.cut_after], None
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(payload):
    state = {"payload": payload, "ranges": [], "cut_after": None, "honour_range": True}
    with local_server(_Handler, "kolektorsdd2.zip", **state) as srv:
        yield srv


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_cli_download_unpacks_and_warns_about_counts(server, tmp_path):
    out = tmp_path / "ksdd2"
    result = runner.invoke(app, ["download", "ksdd2", "--out", str(out), "--url", server.url])
    assert result.exit_code == 0, result.output
    assert (out / "train" / "10000.png").is_file() and (out / "test" / "20000_GT.png").is_file()
    assert (tmp_path / "ksdd2.zip").read_bytes() == server.payload  # kept for reruns
    assert not (tmp_path / "ksdd2.zip.part").exists() and _leftovers(tmp_path) == []
    assert "16 image/mask pairs, expected 2,331" in result.output
    assert "8 image/mask pairs, expected 1,004" in result.output
    # a rerun needs neither the network nor a new unpack
    server.shutdown()
    again = runner.invoke(app, ["download", "ksdd2", "--out", str(out), "--url", server.url])
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_interrupted_download_resumes_with_range(server, tmp_path):
    half = len(server.payload) // 2
    server.cut_after = half
    out = tmp_path / "ksdd2"
    with pytest.raises(DataError, match="interrupted.*run the same command again"):
        download_ksdd2(out, url=server.url, progress=False, log=lambda s: None)
    part = tmp_path / "ksdd2.zip.part"
    assert part.stat().st_size == half
    assert not (tmp_path / "ksdd2.zip").exists() and not out.exists()
    with pytest.warns(UserWarning) as rec:
        download_ksdd2(out, url=server.url, progress=False, log=lambda s: None)
    assert any("expected 2,331" in str(w.message) for w in rec)
    assert server.ranges == [None, f"bytes={half}-"]
    assert (tmp_path / "ksdd2.zip").read_bytes() == server.payload and not part.exists()
    assert (out / "train" / "10301.png").is_file()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "k.zip"
    (tmp_path / "k.zip.part").write_bytes(b"garbage from an older transfer")
    download(server.url, dest, progress=False)
    assert dest.read_bytes() == server.payload


def test_stale_part_larger_than_file_restarts(server, tmp_path):
    dest = tmp_path / "k.zip"
    (tmp_path / "k.zip.part").write_bytes(b"x" * (len(server.payload) + 10))
    download(server.url, dest, progress=False)
    assert dest.read_bytes() == server.payload


def test_whole_part_file_is_only_renamed(server, tmp_path):
    dest = tmp_path / "k.zip"
    (tmp_path / "k.zip.part").write_bytes(server.payload)
    download(server.url, dest, progress=False)
    assert dest.read_bytes() == server.payload
    assert server.ranges == [f"bytes={len(server.payload)}-"]  # answered 416, nothing re-sent


def test_web_page_instead_of_zip_is_refused(server, tmp_path):
    server.payload = b"<html>please log in</html>"
    with pytest.raises(DataError, match="did not send a zip .*--archive PATH"):
        download_ksdd2(tmp_path / "o", url=server.url, progress=False, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_leaves_no_archive(server, tmp_path):
    out = tmp_path / "ksdd2"
    wrong = "0" * 64
    args = ["download", "ksdd2", "--out", str(out), "--url", server.url, "--sha256", wrong]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "error:" in result.output and "expected " + wrong in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no archive, no .part, no folder
    good = hashlib.sha256(server.payload).hexdigest().upper()  # case does not matter
    assert runner.invoke(app, [*args[:-1], good]).exit_code == 0
    assert (out / "train").is_dir()


def test_bad_sha256_option_is_rejected(tmp_path):
    args = ["download", "ksdd2", "--out", str(tmp_path / "o"), "--sha256", "abc"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "64 hexadecimal digits" in result.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_fails_fast_and_names_archive_option(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/kolektorsdd2"
    t0 = time.monotonic()
    result = runner.invoke(app, ["download", "ksdd2", "--out", str(tmp_path / "o"), "--url", url])
    assert time.monotonic() - t0 < 10
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and url in errors[0] and "--archive PATH" in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_silent_server_times_out(tmp_path):
    # Accepts the connection (the kernel does) but never answers: the timeout must fire.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/kolektorsdd2"
        t0 = time.monotonic()
        with pytest.raises(DataError, match="--archive PATH"):
            download(url, tmp_path / "k.zip", connect_timeout=1, progress=False)
        assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("top_folder", [None, "KolektorSDD2"])
def test_archive_option_unpacks_either_layout(tmp_path, top_folder):
    archive = make_ksdd2_zip(tmp_path / "by_hand.zip", 4, 2, top_folder=top_folder)
    out = tmp_path / "data" / "ksdd2"
    with pytest.warns(UserWarning) as rec:
        download_ksdd2(out, archive=archive, progress=False, log=lambda s: None)
    assert [str(w.message).split(": ", 1)[1] for w in rec] == [
        "4 image/mask pairs, expected 2,331",
        "2 image/mask pairs, expected 1,004",
    ]
    # train/ and test/, and the marker naming the command that wrote the folder
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "test", "train"]
    assert COPY_PAIR[0] in {p.name for p in (out / "train").iterdir()}  # prepare drops it
    assert _leftovers(out.parent) == []


def test_archive_checksum_mismatch_keeps_user_file(tmp_path):
    archive = make_ksdd2_zip(tmp_path / "by_hand.zip", 2, 2)
    with pytest.raises(DataError, match="sha256 is .* not extracting"):
        download_ksdd2(tmp_path / "o", archive=archive, sha256="f" * 64, progress=False)
    assert archive.exists() and not (tmp_path / "o").exists()


def test_archive_without_splits_is_refused(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/a.png", b"x")
    with pytest.raises(DataError, match="not a KSDD2 folder"):
        download_ksdd2(tmp_path / "o", archive=archive, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zip"]


# ------------------------------------------------------------------------ unsafe archives


def _zip(path: Path, bad: str, evil: Path) -> Path:
    """A zip with a harmless member first, then one unsafe member of kind ``bad``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/10000.png", b"ok")
        if bad == "slip":
            zf.writestr("train/../../evil.txt", b"pwned")
        elif bad == "absolute":
            zf.writestr(zipfile.ZipInfo(str(evil)), b"pwned")  # ZipFile.writestr keeps the "/"
        elif bad == "symlink":
            info = zipfile.ZipInfo("train/evil.txt")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, str(evil))
        elif bad in ("oversized", "total"):
            zf.writestr("train/evil.txt", bytes(range(256)) * 40)  # 10 KiB, incompressible-ish
        elif bad == "bomb":
            zf.writestr("train/evil.txt", b"\0" * (4 << 20))  # 4 MiB of zeros: ~1000x
    return path


LIMITS = {
    "oversized": Limits(max_member=4096),
    "total": Limits(max_total=4096),
    "bomb": Limits(max_ratio=100, ratio_min_size=1 << 20),
}


@pytest.mark.parametrize("bad", ["slip", "absolute", "symlink", "oversized", "total", "bomb"])
def test_unsafe_zip_member_is_refused_and_nothing_written(tmp_path, bad):
    evil = tmp_path / "evil.txt"
    archive = _zip(tmp_path / "bad.zip", bad, evil)
    out = tmp_path / "a" / "out"
    with pytest.raises(DataError) as err:
        safe_extract(archive, out, LIMITS.get(bad, Limits()), progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(archive) in msg and "evil.txt" in msg
    assert not out.exists() and _leftovers(tmp_path / "a") == []
    assert [p.name for p in tmp_path.rglob("*evil*")] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "bad.zip"]


def _tar(path: Path, bad: str) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("train/10000.png")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        info = tarfile.TarInfo("train/evil.txt" if bad != "slip" else "../evil.txt")
        if bad == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif bad == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "../../evil.txt"
        elif bad == "fifo":
            info.type = tarfile.FIFOTYPE
        else:
            info.size = 5
        tf.addfile(info, io.BytesIO(b"pwned") if info.isfile() else None)
    return path


@pytest.mark.parametrize("bad", ["slip", "symlink", "hardlink", "fifo"])
def test_unsafe_tar_member_is_refused(tmp_path, bad):
    archive = _tar(tmp_path / "bad.tar.gz", bad)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"bad\.tar\.gz: member .*evil\.txt"):
        safe_extract(archive, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"]


def test_safe_tar_and_zip_extract(tmp_path):
    tar = tmp_path / "ok.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("top/train/10000.png")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"ok"))
    assert (safe_extract(tar, tmp_path / "t", progress=False) / "top/train/10000.png").is_file()
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("__MACOSX/._junk", b"x")
        zf.writestr("train\\10000.png", b"ok")  # Windows separators
    out = safe_extract(archive, tmp_path / "z", progress=False)
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == ["train", "train/10000.png"]


def test_damaged_archive_is_one_line_error(tmp_path):
    archive = tmp_path / "k.zip"
    archive.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match=r"k\.zip: not a zip or tar archive"):
        safe_extract(archive, tmp_path / "o", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.zip"]
