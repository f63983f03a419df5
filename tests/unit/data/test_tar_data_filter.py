"""tarfile's ``data`` filter runs on every tar member, on top of dualpatch's own archive checks, and
an archive it refuses ends ``data download --archive`` with one ``error:`` line."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dualpatch.data.extract import safe_extract


def _tar(path: Path, evil: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tf:
        ok = tarfile.TarInfo("train/10000.png")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        tf.addfile(evil, io.BytesIO(b"pwned") if evil.isfile() else None)
    return path


def _traversal() -> tarfile.TarInfo:
    info = tarfile.TarInfo("train/../../evil.txt")
    info.size = 5
    return info


def _symlink_outside() -> tarfile.TarInfo:
    info = tarfile.TarInfo("train/evil.txt")
    info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
    return info


def test_every_tar_member_goes_through_the_data_filter(tmp_path, monkeypatch):
    seen: list[tuple[str, str]] = []
    real = tarfile.data_filter

    def spy(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo | None:
        seen.append((member.name, dest_path))
        return real(member, dest_path)

    monkeypatch.setattr(tarfile, "data_filter", spy)
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("top/a.png", "top/b.png"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tf.addfile(info, io.BytesIO(b"ok"))
    out = safe_extract(archive, tmp_path / "out", progress=False)
    assert [name for name, _ in seen] == ["top/a.png", "top/b.png"]
    # the destination the filter judged against is the folder that became ``out``
    assert {Path(dest).parent for _, dest in seen} == {out.parent}
    assert (out / "top/b.png").read_bytes() == b"ok"


@pytest.mark.parametrize("evil", [_traversal, _symlink_outside], ids=["traversal", "symlink"])
def test_cli_refuses_an_unsafe_tar_in_one_line(tmp_path, evil):
    archive = _tar(tmp_path / "bad.tar", evil())
    out = tmp_path / "ksdd2"
    command = ["data", "download", "ksdd2", "--archive", str(archive), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "dualpatch.cli", *command],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {archive}: member ") and "evil.txt" in lines[0]
    assert "data filter" in lines[0]
    assert not out.exists() and not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar"]
